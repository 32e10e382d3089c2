"""Child processes of the benchmarks: our services (and the peers) with their CPU, RSS and Redis round trips.

    python -m bench.procs api|scorer|notifier      (what `Service` starts)

runs `fatigue <service>` unchanged, except that every request its Redis clients write (one
command, or one pipeline / MULTI-EXEC) is counted and the count written to
$BENCH_TRIPS_FILE every 0.2 s — the round trips of section 7. Counting is one integer increment
per round trip.

`Child` reads a process's CPU time and resident memory from /proc (Linux), so the CPU µs per
event of a contender is its own process's, whatever else runs on the machine.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

EMBEDDED_ENV = {
    # What `fatigue up` sets for the embedded broker (fatigue/supervisor.py make_plan).
    "FATIGUE_KAFKA_IDEMPOTENCE": "false",
    "FATIGUE_BROKER_SESSION_TIMEOUT_S": "6",
    "FATIGUE_BROKER_HEARTBEAT_INTERVAL_S": "1",
    "FATIGUE_BROKER_REBALANCE_TIMEOUT_S": "5",
    "FATIGUE_FETCH_MAX_WAIT_MS": "50",
    "FATIGUE_LOG_LEVEL": "WARNING",
}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` (all its threads), 0 when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS (resident now) and VmHWM (peak resident) of `pid`, in KiB."""
    out = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "VmHWM"):
                out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


@dataclass
class Child:
    name: str
    proc: subprocess.Popen[bytes]
    log_path: Path
    trips_path: Path | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)

    def memory_kib(self) -> dict[str, int]:
        return memory_kib(self.proc.pid)

    def round_trips(self) -> int:
        """Redis round trips the child's clients made so far (as last written, at most 0.2 s old)."""
        if self.trips_path is None:
            return 0
        try:
            return int(self.trips_path.read_text() or 0)
        except (OSError, ValueError):
            return 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, then SIGKILL after `timeout_s`."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill9()

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, args: list[str], env: dict[str, str], workdir: Path, *, count_trips: bool = False) -> Child:
    """Start `args` with its output in workdir/<name>.log (and a round-trip file when counted)."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    trips_path = workdir / f"{name}.trips" if count_trips else None
    child_env = dict(env)
    # The children import bench.* (not installed): the repository root goes first on their path.
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    if trips_path is not None:
        trips_path.write_text("0")
        child_env["BENCH_TRIPS_FILE"] = str(trips_path)
    with log_path.open("wb") as log_file:
        proc = subprocess.Popen(args, env=child_env, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=workdir)
    return Child(name, proc, log_path, trips_path)


def service(name: str, what: str, env: dict[str, str], workdir: Path) -> Child:
    """One of our services (`api`, `scorer`, `notifier`) as production runs it, its round trips counted."""
    return spawn(name, [sys.executable, "-m", "bench.procs", what], env, workdir, count_trips=True)


def stop_all(children: list[Child]) -> None:
    for child in children:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            child.stop()


# ---- the child side ----


def count_round_trips(path: Path) -> None:
    """Count every write of a redis-py asyncio connection; a daemon thread writes the count to `path`."""
    from redis.asyncio.connection import AbstractConnection

    sent = [0]
    original = AbstractConnection.send_packed_command

    async def counting(self: AbstractConnection, command: object, check_health: bool = True) -> None:
        sent[0] += 1
        await original(self, command, check_health)  # type: ignore[arg-type]

    AbstractConnection.send_packed_command = counting  # type: ignore[assignment,method-assign]

    def writer() -> None:
        while True:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(str(sent[0]))
            tmp.replace(path)
            time.sleep(0.2)

    threading.Thread(target=writer, daemon=True, name="bench-trips").start()


def main() -> None:
    what = sys.argv[1]
    trips = os.environ.get("BENCH_TRIPS_FILE")
    if trips:
        count_round_trips(Path(trips))
    from fatigue.cli import main as fatigue_main

    fatigue_main([what])


if __name__ == "__main__":
    main()
