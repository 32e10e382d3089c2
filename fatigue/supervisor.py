"""`fatigue up`: the whole stack in the foreground, on the embedded broker and Redis by default.

Checks first that the API port is free (one line and exit 2 if not, before anything starts).
Starts (unless KAFKA_BOOTSTRAP_SERVERS / REDIS_URL are set) a Tansu broker and a redis-server on
loopback, creates the topics, then runs the API, the scorer and the notifier as child processes —
the same processes production runs — and says "ready" once all three answer their /readyz (the
scorer and the notifier have joined their consumer groups). A child that dies is restarted with
backoff. Ctrl-C (or SIGTERM) stops the children, then the embedded servers.

While it runs, a run file (fatigue/runfile.py) tells the other commands where its broker, Redis
and API are; it is removed at the end, with the temporary work directory (API key file, logs)
when `--workdir` was not given.

Output follows FATIGUE_LOG_FORMAT (default: `text` on a terminal, else `json`): in text, each
child's lines are prefixed with its name; in JSON, the children's JSON lines pass through as they
are, anything else a child prints is wrapped into a JSON record naming it, and the supervisor's own
messages are JSON records of the service `supervisor` (where the generated API key is masked: it
is in the file `api-key` of the work directory).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx

from fatigue.embedded import EmbeddedStack, free_port, start_stack
from fatigue.runfile import CARRIED_SETTINGS, RunFile, live_run_file, remove_run_file, run_file_path, write_run_file
from services.errors import PortInUse
from services.kafka import ensure_topics
from services.logs import setup_logging
from services.redaction import mask_url
from services.settings import CommonSettings

SERVICES = ("api", "scorer", "notifier")
MAX_BACKOFF_S = 30.0
READY_POLL_S = 0.5
API_KEY_FILE = "api-key"

log = logging.getLogger("fatigue.supervisor")
_output = {"json": False}
"""How this process prints: set once by `configure_output` (text by default)."""


def configure_output(fmt: str, level: str = "INFO") -> None:
    """JSON: the supervisor's messages become log records on stdout (one handler, redacted)."""
    _output["json"] = fmt == "json"
    if _output["json"]:
        setup_logging(level, service="supervisor", fmt="json", stream=sys.stdout)


def say(message: str, **fields: object) -> None:
    """A message for the person running `up`: a text line, or a JSON record with `fields`."""
    if _output["json"]:
        log.info("%s", message, extra=fields)
        return
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


def relay(service: str, line: str) -> None:
    """One line a child printed: prefixed (text), passed through (a JSON record) or wrapped (JSON)."""
    if not _output["json"]:
        say(f"{service:>8} | {line}")
        return
    start = line.find("{")  # a terminal control sequence may precede a record: dropped
    with contextlib.suppress(ValueError):
        if start >= 0 and isinstance(json.loads(line[start:]), dict):
            sys.stdout.write(line[start:] + "\n")
            sys.stdout.flush()
            return
    log.warning("%s", line, extra={"service": service, "wrapped": True})


def log_format_for(env: dict[str, str], terminal: bool) -> str:
    """FATIGUE_LOG_FORMAT when set, else text on a terminal and JSON otherwise."""
    chosen = env.get("FATIGUE_LOG_FORMAT", "").strip().lower()
    return chosen or ("text" if terminal else "json")


def preflight(host: str, port: int, how: str = "--port") -> None:
    """PortInUse (one line naming the port and `how` to choose another) when host:port cannot be listened on."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
            sock.bind((host, port))
    except OSError as exc:
        reason = "is already in use" if exc.errno == 98 else f"cannot be listened on ({exc.strerror or exc})"
        raise PortInUse(f"port {port} on {host} {reason}; choose another with {how}") from None


@dataclass
class Plan:
    """Where everything runs; printed for the user and passed to the children as environment."""

    env: dict[str, str]
    api_url: str
    api_key: str | None
    scorer_metrics_url: str
    notifier_metrics_url: str
    embedded: EmbeddedStack | None = None
    notes: list[str] = field(default_factory=list)
    api_key_file: Path | None = None

    @property
    def readiness_urls(self) -> dict[str, str]:
        """Each service's /readyz: 200 once it can do its work (the consumers joined their groups)."""
        return {
            "api": f"{self.api_url}/readyz",
            "scorer": self.scorer_metrics_url.removesuffix("/metrics") + "/readyz",
            "notifier": self.notifier_metrics_url.removesuffix("/metrics") + "/readyz",
        }


def preflight_plan(host: str, port: int, env: dict[str, str]) -> None:
    """The settings every child shares (ConfigError naming the variable, before anything starts), and
    every port `up` will listen on that is already decided: the API's, and the scorer's and the
    notifier's when set in the environment (the others are picked free)."""
    CommonSettings.load("up", env=env)
    preflight(host, port)
    fixed = (("FATIGUE_WEB_PORT", "FATIGUE_WEB_HOST"), ("FATIGUE_METRICS_PORT", "FATIGUE_METRICS_HOST"))
    for variable, host_variable in fixed:
        if env.get(variable, "").strip() not in ("", "0"):
            preflight(env.get(host_variable) or "127.0.0.1", int(env[variable]), f"{variable}=<port>")


def make_plan(host: str, port: int, workdir: Path, log_format: str = "text") -> Plan:
    env = dict(os.environ)
    env["FATIGUE_LOG_FORMAT"] = log_format
    embedded = None
    kafka_given, redis_given = bool(env.get("KAFKA_BOOTSTRAP_SERVERS")), bool(env.get("REDIS_URL"))
    if not (kafka_given and redis_given):  # only what is not given: REDIS_URL may name a Redis Cluster
        embedded = start_stack(workdir, kafka=not kafka_given, redis=not redis_given)
    if embedded is not None and embedded.runs("redis"):
        env["REDIS_URL"] = embedded.redis_url
    if embedded is not None and embedded.runs("kafka"):
        env["KAFKA_BOOTSTRAP_SERVERS"] = embedded.kafka_bootstrap_servers
        # The embedded broker: no idempotent producer; short group timeouts (see docs/operations.md).
        env.setdefault("FATIGUE_KAFKA_IDEMPOTENCE", "false")
        env.setdefault("FATIGUE_BROKER_SESSION_TIMEOUT_S", "6")
        env.setdefault("FATIGUE_BROKER_HEARTBEAT_INTERVAL_S", "1")
        env.setdefault("FATIGUE_BROKER_REBALANCE_TIMEOUT_S", "5")
        env.setdefault("FATIGUE_FETCH_MAX_WAIT_MS", "50")  # the embedded broker holds fetches for the full wait
    notes = []
    api_key = None
    key_file = None
    if not env.get("FATIGUE_API_KEYS"):
        api_key = "fk_" + secrets.token_urlsafe(24)
        env["FATIGUE_API_KEYS"] = f"local:{api_key}:all"
        key_file = workdir / API_KEY_FILE
        key_file.touch(mode=0o600)
        key_file.write_text(api_key + "\n")
        notes.append(f"FATIGUE_API_KEYS was not set: generated a key for this run (shown above; also in {key_file}).")
    env.setdefault("FATIGUE_ALLOW_LOOPBACK_DESTINATIONS", "true")
    env["FATIGUE_HOST"], env["FATIGUE_PORT"] = host, str(port)
    env.setdefault("FATIGUE_WEB_PORT", str(free_port()))
    env.setdefault("FATIGUE_METRICS_PORT", str(free_port()))
    env.setdefault("FATIGUE_DATA_DIR", str(workdir / "scorer"))
    return Plan(
        env=env,
        api_url=f"http://{host}:{port}",
        api_key=api_key,
        scorer_metrics_url=f"http://127.0.0.1:{env['FATIGUE_WEB_PORT']}/metrics",
        notifier_metrics_url=f"http://127.0.0.1:{env['FATIGUE_METRICS_PORT']}/metrics",
        embedded=embedded,
        notes=notes,
        api_key_file=key_file,
    )


class StopRequest:
    """Ctrl-C and SIGTERM while `up` starts its stack or stops it: noted (`requested`), never raised
    half-way through starting a server, so nothing started is left running. While the stack runs,
    the supervisor's loop handles them; `hold()` takes them back afterwards, for the clean-up."""

    def __init__(self) -> None:
        self.requested = False
        self.hold()

    def hold(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._note)

    def _note(self, signum: int, frame: object) -> None:
        self.requested = True


@contextlib.contextmanager
def work_folder(chosen: Path | None) -> Iterator[Path]:
    """The folder of this run: `chosen` (kept; the API key file in it removed at the end), or a new
    temporary folder, removed at the end with everything in it (logs, data, the API key file)."""
    workdir = chosen or Path(tempfile.mkdtemp(prefix="fatigue-up-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        yield workdir
    finally:
        if chosen is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            (workdir / API_KEY_FILE).unlink(missing_ok=True)


@contextlib.contextmanager
def recorded(plan: Plan, workdir: Path) -> Iterator[Path | None]:
    """The run file that tells other commands where this stack is, while the block runs; not
    written (a note says so) when another running `fatigue up` holds it."""
    path = run_file_path(os.environ)
    other, _ = live_run_file(path)
    if other is not None:
        plan.notes.append(f"another fatigue up (pid {other.pid}) is recorded in {path}: other commands use that "
                          "one unless REDIS_URL / KAFKA_BOOTSTRAP_SERVERS are set")
        yield None
        return
    write_run_file(path, run_file_for(plan, workdir))
    plan.notes.append(f"fatigue customers / import / dlq / topics find this stack through {path}")
    try:
        yield path
    finally:
        remove_run_file(path, os.getpid())


def run_file_for(plan: Plan, workdir: Path) -> RunFile:
    """What the run file records: where things are, never a secret (the key file's path, not the key)."""
    env = plan.env
    return RunFile(
        pid=os.getpid(), started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        kafka_bootstrap_servers=env["KAFKA_BOOTSTRAP_SERVERS"], redis_url=env["REDIS_URL"], api_url=plan.api_url,
        workdir=str(workdir), embedded=plan.embedded is not None,
        api_key_file=str(plan.api_key_file) if plan.api_key_file else None,
        settings={k: env[k] for k in CARRIED_SETTINGS if k in env},
    )


def announce(plan: Plan) -> None:
    """The banner: text lines on a terminal, one JSON record otherwise (the key masked there)."""
    env = plan.env
    say(describe(plan), api_url=plan.api_url, docs_url=f"{plan.api_url}/docs", api_key=plan.api_key or "",
        api_key_file=str(plan.api_key_file or ""), kafka=env["KAFKA_BOOTSTRAP_SERVERS"],
        redis=mask_url(env["REDIS_URL"]),
        metrics=[f"{plan.api_url}/metrics", plan.scorer_metrics_url, plan.notifier_metrics_url],
        embedded=plan.embedded is not None)


def describe(plan: Plan) -> str:
    env = plan.env

    def kind(name: str) -> str:
        return "embedded" if plan.embedded is not None and plan.embedded.runs(name) else "external"

    lines = [
        "",
        "contact-fatigue is starting",
        f"  API            {plan.api_url}   (OpenAPI docs: {plan.api_url}/docs)",
        f"  API key        {plan.api_key or '(from FATIGUE_API_KEYS)'}",
        f"  Kafka          {env['KAFKA_BOOTSTRAP_SERVERS']}  ({kind('kafka')})",
        f"  Redis          {mask_url(env['REDIS_URL'])}  ({kind('redis')})",
        f"  Metrics        {plan.api_url}/metrics  {plan.scorer_metrics_url}  {plan.notifier_metrics_url}",
        "  Stop           Ctrl-C",
        *(f"  Note           {note}" for note in plan.notes),
        "",
    ]
    return "\n".join(lines)


class Child:
    """One service process, restarted with backoff when it dies while we are running."""

    def __init__(self, name: str, env: dict[str, str]) -> None:
        self.name = name
        self.env = env
        self.proc: asyncio.subprocess.Process | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        backoff_s = 1.0
        while not stopping.is_set():
            started = time.monotonic()
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "fatigue.cli", self.name,
                env=self.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )
            await self._relay_output()
            code = await self.proc.wait()
            if stopping.is_set():
                return
            backoff_s = 1.0 if time.monotonic() - started > 60 else min(backoff_s * 2, MAX_BACKOFF_S)
            say(f"{self.name:>8} | exited with {code}; restarting in {backoff_s:.0f}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), backoff_s)

    async def _relay_output(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        async for line in self.proc.stdout:
            relay(self.name, line.decode(errors="replace").rstrip())

    async def stop(self, timeout_s: float = 15.0) -> None:
        if self.proc is None or self.proc.returncode is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.proc.wait(), timeout_s)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()


async def supervise(plan: Plan, stopping: asyncio.Event, after_start: list[asyncio.Task[None]]) -> None:
    created = await ensure_topics(CommonSettings.from_env(plan.env))
    if created:
        say(f"created topics: {', '.join(created)}")
    children = [Child(name, plan.env) for name in SERVICES]
    runners = [asyncio.create_task(child.run(stopping)) for child in children]
    readiness = asyncio.create_task(announce_ready(plan, stopping))
    await stopping.wait()
    say("stopping…")
    readiness.cancel()
    for task in after_start:
        task.cancel()
    await asyncio.gather(*(child.stop() for child in children))
    await asyncio.gather(*runners, readiness, *after_start, return_exceptions=True)


async def announce_ready(plan: Plan, stopping: asyncio.Event) -> None:
    """Say "ready" once every service's /readyz answers 200 (the scorer and notifier joined their groups)."""
    started = time.monotonic()
    waiting = dict(plan.readiness_urls)
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while waiting and not stopping.is_set():
            for name, url in list(waiting.items()):
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(url)).status_code == 200:
                        del waiting[name]
            if waiting:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), READY_POLL_S)
    if not stopping.is_set():
        elapsed_s = time.monotonic() - started
        say(f"contact-fatigue is ready ({elapsed_s:.1f}s): {plan.api_url}  (docs: {plan.api_url}/docs)",
            ready=True, api_url=plan.api_url, seconds=round(elapsed_s, 1))
