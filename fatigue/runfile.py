"""Where a running `fatigue up` is, and how the other commands find Kafka and Redis without guessing.

`fatigue up` writes a **run file** once its stack is planned and removes it when it stops (Ctrl-C,
SIGTERM or an error): JSON, mode 0600, holding where the broker, Redis and the API are, its pid,
when it started, the topic and key prefixes it runs with, and the path of the API key file (never
the key itself). Its path is FATIGUE_RUN_FILE when set, else
`$XDG_RUNTIME_DIR/contact-fatigue/up.json`, else `<temp dir>/contact-fatigue-<uid>/up.json`.

The commands that talk to Kafka or Redis (`topics`, `dlq`, `customers`, `import`) take
KAFKA_BOOTSTRAP_SERVERS / REDIS_URL from the environment when set (explicit wins), else from the
run file of a `fatigue up` that is still running (a run file whose pid is gone is ignored, with a
note), else they stop with exit 2 (`NoStack`). Each prints one line on stderr saying which Kafka
and Redis it used and where that came from, credentials masked.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, TypeVar

from services.errors import ConfigError
from services.redaction import mask_url
from services.settings import CommonSettings

S = TypeVar("S", bound=CommonSettings)

RUN_FILE_VARIABLE = "FATIGUE_RUN_FILE"
RUN_FILE_VERSION = 1
KAFKA_VARIABLE = "KAFKA_BOOTSTRAP_SERVERS"
REDIS_VARIABLE = "REDIS_URL"
CARRIED_SETTINGS = ("FATIGUE_TOPIC_PREFIX", "FATIGUE_REDIS_PREFIX", "FATIGUE_PARTITIONS", "FATIGUE_KAFKA_IDEMPOTENCE")
"""Settings of `fatigue up` that say where its data is; a command located by the run file takes
them from it unless its own environment sets them."""


class NoStack(ConfigError):
    """Neither the environment nor a running `fatigue up` says where Kafka / Redis are."""

    operator_action = (f"Set {REDIS_VARIABLE} and {KAFKA_VARIABLE} to your stack, or start one with "
                       "`fatigue up` (in another terminal) and run the command again.")


@dataclass(frozen=True)
class RunFile:
    """What `fatigue up` records about the stack it runs."""

    pid: int
    started_at: str
    kafka_bootstrap_servers: str
    redis_url: str
    api_url: str
    workdir: str
    embedded: bool
    api_key_file: str | None = None
    settings: dict[str, str] = field(default_factory=dict)


def run_file_path(env: Mapping[str, str]) -> Path:
    """FATIGUE_RUN_FILE, else under $XDG_RUNTIME_DIR, else under the temp dir (per user)."""
    if env.get(RUN_FILE_VARIABLE, "").strip():
        return Path(env[RUN_FILE_VARIABLE].strip())
    runtime = env.get("XDG_RUNTIME_DIR", "").strip()
    if runtime:
        return Path(runtime) / "contact-fatigue" / "up.json"
    return Path(tempfile.gettempdir()) / f"contact-fatigue-{os.getuid()}" / "up.json"


def write_run_file(path: Path, run: RunFile) -> None:
    """Atomically, readable by this user only, in a folder only this user can enter."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.parent.stat().st_uid != os.getuid():
        raise ConfigError(f"{path.parent} belongs to another user; set {RUN_FILE_VARIABLE} to a file of yours")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump({"v": RUN_FILE_VERSION, **asdict(run)}, handle, indent=2)
    os.replace(tmp, path)


def read_run_file(path: Path) -> RunFile | None:
    """The run file, or None when there is none; ValueError when it cannot be read as one."""
    try:
        body = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(body, dict) or body.get("v") != RUN_FILE_VERSION:
        raise ValueError("not a run file of this version")
    try:
        return RunFile(**{k: v for k, v in body.items() if k != "v"})
    except TypeError as exc:
        raise ValueError(str(exc)) from None


def remove_run_file(path: Path, pid: int) -> None:
    """Remove the run file if it is the one process `pid` wrote (another `up` may have its own)."""
    with contextlib.suppress(ValueError):
        run = read_run_file(path)
        if run is not None and run.pid == pid:
            path.unlink(missing_ok=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def live_run_file(path: Path) -> tuple[RunFile | None, str | None]:
    """The run file of a `fatigue up` still running, or None and a note saying why one was ignored."""
    try:
        run = read_run_file(path)
    except ValueError as exc:
        return None, f"ignored the run file {path}: {exc}"
    if run is None:
        return None, None
    if not pid_alive(run.pid):
        return None, f"ignored the run file {path}: fatigue up (pid {run.pid}) is not running any more"
    return run, None


@dataclass
class Located:
    """The environment a command builds its settings from, and what to tell the user."""

    env: dict[str, str]
    used: list[str]
    notes: list[str] = field(default_factory=list)

    def line(self, command: str) -> str:
        notes = "".join(f"fatigue {command}: note: {note}\n" for note in self.notes)
        return notes + f"fatigue {command}: using {' and '.join(self.used)}\n"


def locate(env: Mapping[str, str], *, kafka: bool, redis: bool) -> Located:
    """Where the Kafka and/or Redis a command needs are: the environment first, then a running
    `fatigue up`'s run file; NoStack when neither says."""
    wanted = [name for name, needed in ((KAFKA_VARIABLE, kafka), (REDIS_VARIABLE, redis)) if needed]
    missing = [name for name in wanted if not env.get(name, "").strip()]
    located = Located(env=dict(env), used=[])
    path = run_file_path(env)
    run, note = live_run_file(path) if missing else (None, None)
    if note:
        located.notes.append(note)
    if missing and run is None:
        raise NoStack(f"{' and '.join(missing)} not set and no `fatigue up` is running "
                      f"({note or f'no run file at {path}'}): nothing says where the stack is")
    if run is not None:
        from_run = {KAFKA_VARIABLE: run.kafka_bootstrap_servers, REDIS_VARIABLE: run.redis_url}
        located.env.update({name: from_run[name] for name in missing})
        located.env.update({k: v for k, v in run.settings.items() if k in CARRIED_SETTINGS and k not in env})
    for name in wanted:
        source = f"the fatigue up run file, pid {run.pid}" if run is not None and name in missing else name
        what = "Kafka" if name == KAFKA_VARIABLE else "Redis"
        located.used.append(f"{what} {mask_url(located.env[name])} (from {source})")
    return located


def located_settings(command: str, cls: type[S], err: IO[str], *, kafka: bool, redis: bool) -> S:
    """`cls` built from the environment plus what a running `fatigue up` records (see `locate`),
    after one line on `err` saying which Kafka / Redis are used."""
    located = locate(os.environ, kafka=kafka, redis=redis)
    settings = cls.load(command, env=located.env)
    err.write(located.line(command))
    err.flush()
    return settings
