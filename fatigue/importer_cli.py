"""The `fatigue import` command line: flags, settings, the progress bar, the summary (docs/import.md)."""

from __future__ import annotations

import argparse
import asyncio
import resource
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.errors import ConfigError

if TYPE_CHECKING:
    from fatigue.importer import Counts, ImportJob

DEFAULT_BATCH = 500


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
    cmd.add_argument("--no-progress", action="store_true", help="no progress bar (e.g. in logs)")


def run_import(args: argparse.Namespace) -> int:
    """Exit status: 0 done (invalid rows are in the report), 2 configuration errors (raised)."""
    from fatigue.importer import ImportJob, column_map, iter_paths

    if args.batch < 1 or (args.rate is not None and args.rate <= 0):
        raise ConfigError("--batch must be >= 1 and --rate > 0")
    files = list(iter_paths(args.files))
    job = ImportJob(files=files, producer=args.producer, fmt=args.fmt, batch_size=args.batch, rate_per_s=args.rate,
                    dry_run=args.dry_run, checkpoint_path=args.checkpoint, resume=args.resume,
                    report_path=args.report,
                    columns=column_map(args.columns, args.values, args.constants, args.mapping))
    started = time.monotonic()
    try:
        counts = asyncio.run(_run(job, show_progress=not args.no_progress))
    except KeyboardInterrupt:
        sys.stderr.write(f"interrupted: stored batches are in {args.checkpoint}; run again with --resume\n")
        return 130
    elapsed = max(time.monotonic() - started, 1e-9)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    verb = "validated (dry run, nothing written)" if job.dry_run else "imported"
    sys.stderr.write(
        f"{verb}: {counts.rows} rows, {counts.valid} valid, {counts.invalid} invalid (see {args.report}), "
        f"{counts.accepted} stored, {counts.duplicates} duplicates, {counts.refused} refused as too large; "
        f"{counts.rows / elapsed:,.0f} rows/s, "
        f"peak RSS {peak_mib:,.0f} MiB\n")
    return 0


async def _run(job: ImportJob, *, show_progress: bool) -> Counts:
    from tqdm import tqdm

    from fatigue.importer import Importer, count_rows
    from ingest.accept import AcceptPath
    from ingest.dedup import DedupStore
    from ingest.publisher import EventPublisher
    from services.kafka import ensure_topics
    from services.redisio import make_redis
    from services.settings import ImportSettings

    total = count_rows(job.files, job.fmt)
    progress = tqdm(total=total, unit="ev", unit_scale=True, disable=not show_progress, file=sys.stderr,
                    desc="import", dynamic_ncols=True, mininterval=0.5)
    assert job.report_path is not None
    mode = "a" if job.resume else "w"
    try:
        with job.report_path.open(mode, encoding="utf-8", newline="") as report:
            if job.dry_run:
                return await Importer(job, None, progress).run(report)
            settings = ImportSettings.load("import")
            job.max_future_skew_s = settings.max_future_skew_s
            await ensure_topics(settings)
            redis = make_redis(settings)
            publisher = EventPublisher(settings, client_id="fatigue-import")
            try:
                accept = AcceptPath(publisher, DedupStore(redis, settings.keys, settings.dedup_ttl_s),
                                    topic=settings.events_topic, max_future_skew_s=settings.max_future_skew_s,
                                    claim_wait_s=settings.kafka_request_timeout_s + 1)
                return await Importer(job, accept, progress).run(report)
            finally:
                await publisher.close()
                await redis.aclose()
    finally:
        progress.close()
