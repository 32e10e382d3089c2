"""What every section of the benchmark suite shares: figures, interleaved runs, the table, the JSON.

A `Figure` is one line of the table: the median of its runs (each run taken in a round of the
section, the rounds interleaving every contender of the section so machine noise hits all of them
alike), the 1-minute load average at the start of each run, and its ratio to the ceiling or peer
it is compared with. `Report` collects the figures of one suite run, prints the table and writes
the JSON (with the machine it ran on).
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).parent / "results"


def load_1m() -> float:
    return os.getloadavg()[0]


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-quantile (0..1) of already sorted values, nearest rank."""
    if not sorted_values:
        return float("nan")
    rank = max(0, min(len(sorted_values) - 1, math.ceil(q * len(sorted_values)) - 1))
    return sorted_values[rank]


@dataclass
class Sample:
    """What one run of one contender measured: the primary value and any secondary ones."""

    value: float
    also: dict[str, float] = field(default_factory=dict)
    load: float = field(default_factory=load_1m)


@dataclass
class Figure:
    section: str
    name: str
    unit: str
    value: float
    runs: list[float]
    load: list[float]
    also: dict[str, float] = field(default_factory=dict)
    """Medians of the secondary values over the runs (e.g. cpu_us_per_event, p99_ms)."""
    ratio: float | None = None
    ratio_to: str | None = None
    target: str | None = None
    note: str | None = None
    short: str | None = None
    """How other figures' ratios name this one."""


class Contender:
    """The runs of one measured thing within a section; `figure()` summarises them."""

    def __init__(self, section: str, name: str, unit: str, run: Callable[[], Awaitable[Sample]],
                 *, target: str | None = None, note: str | None = None, short: str | None = None) -> None:
        self.short = short
        self.section = section
        self.name = name
        self.unit = unit
        self.run = run
        self.samples: list[Sample] = []
        self.target = target
        self.note = note

    def figure(self) -> Figure:
        keys = sorted({k for s in self.samples for k in s.also})
        also = {k: median([s.also[k] for s in self.samples if k in s.also]) for k in keys}
        return Figure(self.section, self.name, self.unit, median([s.value for s in self.samples]),
                      [s.value for s in self.samples], [s.load for s in self.samples], also,
                      target=self.target, note=self.note, short=self.short)


async def interleave(contenders: Sequence[Contender], rounds: int, *, say: Callable[[str], None]) -> list[Figure]:
    """Run every contender once per round, in the same order each round; their figures."""
    for n in range(rounds):
        for contender in contenders:
            load = load_1m()
            sample = await contender.run()
            sample.load = load
            contender.samples.append(sample)
            extra = "  ".join(f"{k} {v:,.1f}" for k, v in sample.also.items())
            say(f"    round {n + 1}/{rounds}  {contender.name:<46} {sample.value:>12,.1f} {contender.unit}  "
                f"{extra}  (load {load:.2f})")
    return [c.figure() for c in contenders]


def single(section: str, name: str, unit: str, samples: Sequence[Sample], **kwargs: Any) -> Figure:
    """A figure from samples taken outside `interleave` (e.g. several rates of one open-loop run)."""
    c = Contender(section, name, unit, _never, **kwargs)
    c.samples = list(samples)
    return c.figure()


async def _never() -> Sample:
    raise AssertionError("not run through interleave")


def relate(figure: Figure, base: Figure, *, inverse: bool = False) -> Figure:
    """Set `figure.ratio` to figure / base (base / figure with inverse: for times)."""
    if base.value and figure.value and not math.isnan(base.value) and not math.isnan(figure.value):
        figure.ratio = base.value / figure.value if inverse else figure.value / base.value
        figure.ratio_to = base.short or base.name
    return figure


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return {"host": platform.node(), "cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "kernel": platform.release(),
            "commit": os.environ.get("BENCH_COMMIT") or _git_commit()}


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False,
                             cwd=Path(__file__).parent, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True, check=False,
                               cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "?"


class Report:
    def __init__(self, mode: str, params: dict[str, Any]) -> None:
        self.mode = mode
        self.params = params
        self.figures: list[Figure] = []
        self.started = time.time()
        self.load_start = os.getloadavg()

    def add(self, figures: Sequence[Figure]) -> None:
        self.figures.extend(figures)

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode, "started_at": datetime.fromtimestamp(self.started, UTC).isoformat(),
            "duration_s": round(time.time() - self.started, 1), "machine": machine(),
            "load_average_at_start": self.load_start, "load_average_at_end": os.getloadavg(),
            "params": self.params, "figures": [asdict(f) for f in self.figures],
        }

    def write(self, directory: Path = RESULTS_DIR) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        stamp = datetime.fromtimestamp(self.started, UTC).strftime("%Y%m%dT%H%M%SZ")
        path = directory / f"{self.mode}-{stamp}.json"
        path.write_text(json.dumps(self.to_json(), indent=1) + "\n")
        return path

    def table(self) -> str:
        return format_table(self.figures)


SHORT = {
    "cpu_us_per_event": "cpu us/ev", "redis_cpu_us_per_event": "redis cpu us/ev",
    "broker_cpu_us_per_event": "broker cpu us/ev", "redis_commands_per_event": "redis cmd/ev",
    "redis_round_trips_per_event": "redis trips/ev", "cpu_us_per_request": "cpu us/req",
    "batch_records_mean": "mean batch (records)",
}


def _num(value: float) -> str:
    if value != value:  # nan
        return "-"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:,.1f}"
    return f"{value:,.2f}"


def format_table(figures: Sequence[Figure]) -> str:
    rows = [("section", "measurement", "median", "unit", "runs", "load", "ratio", "also / target")]
    for f in figures:
        runs = " ".join(_num(r) for r in f.runs) if len(f.runs) > 1 else ""
        load = " ".join(f"{x:.1f}" for x in f.load)
        ratio = f"{f.ratio:.2f}x {f.ratio_to}" if f.ratio is not None and f.ratio == f.ratio and f.ratio_to else ""
        if f.ratio is not None and 0 < f.ratio < 0.1:
            ratio = f"{f.ratio:.3f}x {f.ratio_to}"
        also = "  ".join(f"{SHORT.get(k, k)} {_num(v)}" for k, v in f.also.items())
        tail = "  ".join(x for x in (also, f"target {f.target}" if f.target else "", f.note or "") if x)
        rows.append((f.section, f.name, _num(f.value), f.unit, runs, load, ratio, tail))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[i].rjust(widths[i]) if i == 2 else row[i].ljust(widths[i]) for i in range(len(widths))]
        lines.append("  ".join(cells) + "  " + row[-1])
        if n == 0:
            lines.append("  ".join("-" * w for w in widths) + "  " + "-" * 13)
    return "\n".join(lines)


@dataclass
class Context:
    """Where a section runs: the broker and Redis of this suite run, a work directory, the sizes."""

    bootstrap: str
    redis_url: str
    workdir: Path
    rounds: int
    sizes: dict[str, Any]
    broker_pid: int | None = None
    redis_pid: int | None = None
    say: Callable[[str], None] = print
    profile: bool = False
    """Record py-spy profiles of the scorer catching up and of the API under load (bench/results/profiles/)."""
    apache_kafka: str | None = None
    """An Apache Kafka to run section 1k on (`--apache-kafka`); None: the section starts its own."""
    run_id: str = field(default_factory=lambda: f"{int(time.time()) % 1_000_000:06d}")

    def size(self, name: str) -> Any:
        return self.sizes[name]
