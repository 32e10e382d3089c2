"""The `fatigue import` command line: flags, settings, the progress bar, the summary (docs/import.md).

Where Kafka and Redis are comes from the environment or a running `fatigue up` (fatigue/runfile.py),
never a default. De-duplication is the import's promise: Redis not answering at the start is exit 2,
and a batch whose ids Redis could not claim is not stored (`StrictDedup`), unless `--dedup-optional`.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import signal
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from services.errors import ConfigError

if TYPE_CHECKING:
    from fatigue.import_alerts import AlertCount
    from fatigue.importer import Counts, Importer, ImportJob
    from services.redisio import RedisClient
    from services.settings import ImportSettings

DEFAULT_BATCH = 500
CANCEL_AGAIN_S = 0.5
"""After Ctrl-C, how often the import is cancelled again until it has stopped."""
T = TypeVar("T")


class Interrupted(Exception):
    """Ctrl-C (SIGINT) stopped the import."""


async def until_interrupted(main: Coroutine[Any, Any, T]) -> T:
    """Run `main`; Ctrl-C cancels it, and again every CANCEL_AGAIN_S until it has stopped, then raises
    `Interrupted`. `asyncio.run` cancels once on the first Ctrl-C, and on Python 3.11 a cancellation that
    arrives as an inner `wait_for` completes is lost: the import went on to wait on its `--rate` for
    good (seen in a full test run, tests/fatigue/test_import_files.py)."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(main)
    interrupted = False

    def cancel() -> None:
        if not task.done():
            task.cancel()
            loop.call_later(CANCEL_AGAIN_S, cancel)

    def on_sigint() -> None:
        nonlocal interrupted
        interrupted = True
        cancel()

    loop.add_signal_handler(signal.SIGINT, on_sigint)
    try:
        return await task
    except asyncio.CancelledError:
        if interrupted:
            raise Interrupted from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)


@dataclass
class _Run:
    """What an interrupted run needs to say where it stopped."""

    importer: Importer | None = None
    alerts: AlertCount | None = None
    """The alerts the import caused, once counted."""


def add_import_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "import", help="load a history of events (CSV/JSONL, .gz) through the API's validation and de-duplication",
        description="Stream CSV or JSONL files of events (also .gz) to the events topic through the same "
        "contract, envelope and de-duplication as POST /v1/events (docs/import.md).")
    cmd.add_argument("files", type=Path, nargs="+", metavar="FILE")
    cmd.add_argument("--format", dest="fmt", choices=("jsonl", "csv"), default=None,
                     help="input format (default: from the file names: .csv, .jsonl, .ndjson, also .gz)")
    cmd.add_argument("--map", dest="columns", action="append", default=[], metavar="FIELD=COLUMN",
                     help="take a contract field from another column, e.g. --map customer_id=contact_id")
    cmd.add_argument("--value", dest="values", action="append", default=[], metavar="FIELD:FROM=TO",
                     help="map a value, e.g. --value channel:Call=phone")
    cmd.add_argument("--set", dest="constants", action="append", default=[], metavar="FIELD=VALUE",
                     help="a constant field, e.g. --set type=touch")
    cmd.add_argument("--mapping", type=Path, default=None, metavar="YAML",
                     help="a mapping file with columns / values / constants (flags win over it)")
    cmd.add_argument("--producer", default="import",
                     help="producer name: event ids are de-duplicated per producer (default: import)")
    cmd.add_argument("--batch", type=int, default=DEFAULT_BATCH, help=f"events per write (default {DEFAULT_BATCH})")
    cmd.add_argument("--rate", type=float, default=None, metavar="EVENTS_PER_S",
                     help="at most this many events per second (default: as fast as Kafka takes them)")
    cmd.add_argument("--dry-run", action="store_true", help="validate and report only: nothing is written")
    cmd.add_argument("--report", type=Path, default=Path("import-report.csv"),
                     help="the validation report: file,row,field,reason (default import-report.csv)")
    cmd.add_argument("--checkpoint", type=Path, default=Path(".fatigue-import.checkpoint"),
                     help="where progress is recorded after every acknowledged batch")
    cmd.add_argument("--resume", action="store_true", help="continue from the checkpoint instead of the start")
    cmd.add_argument("--dedup-optional", action="store_true",
                     help="store events even when Redis (de-duplication) does not answer; a re-run may then store "
                     "events twice (default: exit 2)")
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in logs)")
    cmd.add_argument("--alerts-wait", type=float, default=120.0, metavar="SECONDS",
                     help="after storing, wait up to this long for the scorer to process the import and count "
                     "the alerts it sent reps (0: do not wait; default 120)")


def run_import(args: argparse.Namespace) -> int:
    """Exit status: 0 done (invalid rows are in the report); 2 (raised) for configuration errors, a
    header without a required column, Redis not answering, or a file that cannot be read to its
    end (after the summary); 130 after Ctrl-C."""
    from fatigue.importer import ImportJob, check_headers, column_map, iter_paths
    from fatigue.runfile import located_settings
    from services.history_rows import FileUnreadable
    from services.settings import ImportSettings

    if args.batch < 1 or (args.rate is not None and args.rate <= 0):
        raise ConfigError("--batch must be >= 1 and --rate > 0")
    files = list(iter_paths(args.files))
    job = ImportJob(files=files, producer=args.producer, fmt=args.fmt, batch_size=args.batch, rate_per_s=args.rate,
                    dry_run=args.dry_run, checkpoint_path=args.checkpoint, resume=args.resume,
                    report_path=args.report,
                    columns=column_map(args.columns, args.values, args.constants, args.mapping))
    check_headers(files, job.fmt, job.columns)  # before anything is stored
    settings = None if job.dry_run else located_settings("import", ImportSettings, sys.stderr, kafka=True, redis=True)
    run = _Run()
    started = time.monotonic()
    try:
        counts = asyncio.run(until_interrupted(_run(job, settings, run, show_progress=not args.no_progress,
                                                    dedup_optional=args.dedup_optional,
                                                    alerts_wait_s=args.alerts_wait)))
    except (KeyboardInterrupt, Interrupted):
        sys.stderr.write(interrupted_message(job, run.importer))
        return 130
    elapsed = max(time.monotonic() - started, 1e-9)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    verb = "validated (dry run, nothing written)" if job.dry_run else "imported"
    sys.stderr.write(
        f"{verb}: {counts.rows} rows, {counts.valid} valid, {counts.invalid} invalid (see {args.report}), "
        f"{counts.accepted} stored, {counts.duplicates} duplicates, {counts.refused} refused as too large; "
        f"{counts.rows / elapsed:,.0f} rows/s, "
        f"peak RSS {peak_mib:,.0f} MiB\n")
    if not job.dry_run:
        sys.stderr.write(alerts_line(run.alerts, args.alerts_wait) + "\n")
    unreadable = run.importer.unreadable if run.importer else []
    if unreadable:
        first, more = unreadable[0], len(unreadable) - 1
        also = f" (and {more} more files that cannot be read to their end: see {args.report})" if more else ""
        raise FileUnreadable(first.path, first.line, first.reason + also)
    return 0


def alerts_line(alerts: AlertCount | None, wait_s: float) -> str:
    """What the import's summary says of the alerts it caused (docs/import.md)."""
    from fatigue.import_alerts import NO_PROGRESS_S

    if alerts is None:
        return "alerts to reps: not counted (--alerts-wait 0, nothing was stored, or Redis did not answer)"
    if alerts.alerts is None and alerts.stalled:
        return (f"alerts to reps: unknown: no scorer processed the import's partitions for {NO_PROGRESS_S:g}s "
                "(is it running? the events are stored: it scores them when it runs)")
    if alerts.alerts is None:
        return (f"alerts to reps: unknown: the scorer had not processed the import within {wait_s:g}s "
                "(is it running? `fatigue customers list` shows where customers are)")
    noun = "alert" if alerts.alerts == 1 else "alerts"
    return (f"alerts to reps: {alerts.alerts} {noun} for the imported customers (history is told once, where it "
            f"leaves each customer; counted {alerts.waited_s:.0f}s after storing)")


async def _alerts_before(redis: RedisClient, settings: ImportSettings, producer: str) -> int | None:
    """The alerts counted for `producer` before the import; None when Redis does not answer (an
    import with --dedup-optional goes on: then its alerts are not counted)."""
    from fatigue.import_alerts import alerts_sent
    from services.redisio import REDIS_ERRORS

    try:
        return await alerts_sent(redis, settings.keys, settings.partitions, producer)
    except REDIS_ERRORS:
        return None


def interrupted_message(job: ImportJob, importer: Importer | None) -> str:
    """After Ctrl-C: `--resume` only when a checkpoint of this import exists to resume from."""
    if job.dry_run:
        return "interrupted (dry run: nothing was written)\n"
    checkpoint = job.checkpoint_path
    written = importer is not None and importer.checkpoint_saved
    if checkpoint is not None and checkpoint.exists() and (written or job.resume):
        return f"interrupted: the batches stored so far are recorded in {checkpoint}; run again with --resume\n"
    return "interrupted before any batch was stored: nothing to resume; run the same command again\n"


async def _run(job: ImportJob, settings: ImportSettings | None, run: _Run, *, show_progress: bool,
               dedup_optional: bool, alerts_wait_s: float = 0.0) -> Counts:
    from tqdm import tqdm

    from fatigue.import_alerts import NO_PROGRESS_S, wait_for_alerts
    from fatigue.import_dedup import dedup_store
    from fatigue.importer import Importer, count_rows
    from ingest.accept import AcceptPath
    from ingest.publisher import EventPublisher
    from services.kafka import ensure_topics
    from services.redisio import REDIS_ERRORS, make_redis

    total = count_rows(job.files, job.fmt)
    progress = tqdm(total=total, unit="ev", unit_scale=True, disable=not show_progress, file=sys.stderr,
                    desc="import", dynamic_ncols=True, mininterval=0.5)
    assert job.report_path is not None
    mode = "a" if job.resume else "w"
    try:
        with job.report_path.open(mode, encoding="utf-8", newline="") as report:
            if settings is None:
                run.importer = Importer(job, None, progress)
                return await run.importer.run(report)
            job.max_future_skew_s = settings.max_future_skew_s
            redis = make_redis(settings)
            try:
                dedup = await dedup_store(redis, settings, sys.stderr, optional=dedup_optional)
            except BaseException:
                await redis.aclose()
                raise
            await ensure_topics(settings)
            publisher = EventPublisher(settings, client_id="fatigue-import")
            try:
                accept = AcceptPath(publisher, dedup,
                                    topic=settings.events_topic, max_future_skew_s=settings.max_future_skew_s,
                                    claim_wait_s=settings.kafka_request_timeout_s + 1)
                run.importer = Importer(job, accept, progress)
                before = await _alerts_before(redis, settings, job.producer) if alerts_wait_s > 0 else None
                counts = await run.importer.run(report)
                if before is not None and run.importer.positions:
                    progress.close()
                    sys.stderr.write(f"waiting up to {alerts_wait_s:g}s for the scorer to process the import "
                                     f"(less when it makes no progress for {NO_PROGRESS_S:g}s)...\n")
                    try:
                        run.alerts = await wait_for_alerts(
                            redis, settings.keys, settings.partitions, job.producer, settings.events_topic,
                            run.importer.positions, before, settings.timer_settle_s, alerts_wait_s)
                    except REDIS_ERRORS:
                        pass  # everything is stored; only the count is unknown (the summary says so)
                return counts
            finally:
                await publisher.close()
                await redis.aclose()
    finally:
        progress.close()
