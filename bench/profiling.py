"""py-spy profiles of a running service under load, and a summary of where its busy samples go.

`record(pid, seconds, path)` samples the process (all threads, busy samples only) into a
collapsed-stack file; `summarize(path)` gives the shares of busy samples by package of the leaf
frame (where the CPU was actually spent) and the top functions inclusive and exclusive.
Needs the `py-spy` binary (dev dependency) and permission to ptrace the process (root here).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import sys
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")
AREAS = (
    ("/ingest/", "ingest (ours)"), ("/services/", "services (ours)"), ("/scorer/", "scorer (ours)"),
    ("/notifier/", "notifier (ours)"), ("/fastapi/", "fastapi"), ("/starlette/", "starlette"),
    ("/pydantic", "pydantic"), ("/uvicorn/", "uvicorn"), ("/h11/", "h11"), ("/httptools/", "httptools"),
    ("/uvloop/", "uvloop"), ("/redis/", "redis-py"), ("/aiokafka/", "aiokafka"), ("/anyio/", "anyio (thread pool)"),
    ("/faust/", "faust"), ("/mode/", "mode"), ("/msgspec/", "msgspec"), ("/zstd/", "zstd"),
    ("/prometheus_client/", "prometheus_client"), ("/asyncio/", "asyncio"), ("/json/", "json (stdlib)"),
    ("/concurrent/", "thread pool"), ("/threading.py", "thread pool"), ("/logging/", "logging"),
)


def binary() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


async def record(pid: int, seconds: float, path: Path, rate_hz: int = 200) -> bool:
    """Sample `pid` for `seconds` into `path` (collapsed stacks); False when py-spy is not available."""
    exe = binary()
    if exe is None:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(rate_hz),
        "--format", "raw", "--threads", "--output", str(path), "--nonblocking", stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL)
    return await proc.wait() == 0 and path.exists()


_RUNNERS = frozenset({
    "<module>", "main", "_run_code", "_run_module_as_main", "run", "Runner.run", "BaseEventLoop.run_forever",
    "BaseEventLoop.run_until_complete", "BaseEventLoop._run_once", "asyncio_run", "Server.run", "Server.serve",
    "_dispatch", "Handle._run", "Thread.run", "Thread._bootstrap", "Thread._bootstrap_inner", "_worker",
    "Server._serve", "execute_from_commandline",
    # the ASGI stack every request passes through (middlewares, routers): wrappers, not work
    "wrap_app_handling_exceptions.<locals>.wrapped_app", "request_response.<locals>.app.<locals>.app",
    "request_response.<locals>.app", "APIRoute.handle", "_IncludedRouter._handle_selected", "_IncludedRouter.handle",
    "APIRouter.app", "APIRouter.handle", "Router.__call__", "AsyncExitStackMiddleware.__call__",
    "BodySizeLimit.__call__", "ExceptionMiddleware.__call__", "ExceptionTelemetryMiddleware.__call__",
    "ServerErrorMiddleware.__call__", "Starlette.__call__", "ProxyHeadersMiddleware.__call__", "FastAPI.__call__",
    "RequestResponseCycle.run_asgi", "get_request_handler.<locals>.app",
})
"""Frames every busy sample of a thread (or every request) runs under: left out of the inclusive list."""


def _thread(stack: str) -> str:
    for part in stack.split(";"):
        if part.startswith("thread "):
            return part.strip()
    return "?"


def _frames(stack: str) -> list[tuple[str, str]]:
    out = []
    for part in stack.split(";"):
        m = _FRAME.match(part.strip())
        if m and not part.startswith(("process ", "thread ")):
            out.append((m.group("func"), m.group("file") or ""))
    return out


def area_of(file: str) -> str:
    file = "/" + file.lstrip("/")  # py-spy gives paths relative to sys.path entries
    for needle, name in AREAS:
        if needle in file:
            return name
    return "other"


def summarize(path: Path, top: int = 18) -> str:
    inclusive: Counter[str] = Counter()
    exclusive: Counter[str] = Counter()
    areas: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        frames = _frames(stack)
        if not frames:
            continue
        total += count
        threads[_thread(stack)] += count
        func, file = frames[-1]
        exclusive[f"{func} ({Path(file).name})"] += count
        areas[area_of(file)] += count
        for label in {f"{f} ({Path(p).name})" for f, p in frames if f not in _RUNNERS}:
            inclusive[label] += count
    if not total:
        return "no busy samples"
    main_thread = threads.most_common(1)[0][1]
    lines = [f"{total:,} busy samples; {100 * (total - main_thread) / total:.1f}% outside the busiest thread "
             f"(the event loop): {len(threads) - 1} other threads", "", "by package of the running frame:"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in areas.most_common()]
    shared = [name for name, n in inclusive.items() if n > 0.45 * total]  # the stack every request runs under
    lines += ["", f"top functions, inclusive (leaving out {len(shared)} frames on the path of most samples):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top + len(shared))
              if name not in shared][:top]
    lines += ["", "top functions, exclusive (self):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in exclusive.most_common(top)]
    return "\n".join(lines)
