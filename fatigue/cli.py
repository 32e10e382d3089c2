"""The `fatigue` command: run the whole stack or any one service.

    fatigue --version                            the installed version
    fatigue up [--host H] [--port P] [--demo]   everything, embedded broker + Redis by default
    fatigue demo                                 `up` plus a synthetic stream and a webhook sink
    fatigue api | scorer | notifier              one service, configured from the environment
    fatigue topics                               create the Kafka topics if missing
    fatigue backtest EVENTS [--policy FILE] ...  replay a history offline through the same core
    fatigue intake                               the Kafka intake consumer (intake topic -> events topic)
    fatigue import FILE... [--map ...] ...       load a history of events through the API's accept path
    fatigue dlq list|replay [--stage S] ...      the dead-letter topic: show letters, publish them back
    fatigue customers list LIST [--owner-rep-id] the lists reps work from (cooling_off, to_activate, throttled)
    fatigue customers show ID [--state]          one customer's stored snapshot (or state), decoded
    fatigue repartition --partitions N           grow the topics to N partitions and move the state (scorers stopped)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path

from services.errors import FatigueError
from services.settings import DEFAULT_TIMER_SETTLE_S


def _parser() -> argparse.ArgumentParser:
    from services.metrics import version

    parser = argparse.ArgumentParser(prog="fatigue", description="Real-time contact-fatigue engine.")
    parser.add_argument("--version", action="version", version=f"contact-fatigue {version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("up", "run everything in the foreground"), ("demo", "up + a synthetic demo stream")):
        cmd = sub.add_parser(name, help=help_text)
        cmd.add_argument("--host", default="127.0.0.1", help="API listen address (default 127.0.0.1)")
        cmd.add_argument("--port", type=int, default=8000, help="API port (default 8000)")
        cmd.add_argument("--workdir", type=Path, default=None, help="where embedded servers keep logs and data")
        cmd.add_argument("--customers", type=int, default=300, help="demo: number of synthetic customers")
        cmd.add_argument("--seed", type=int, default=7, help="demo: random seed (same seed, same stream)")
        if name == "up":
            cmd.add_argument("--demo", action="store_true", help="also feed the synthetic demo stream")
    sub.add_parser("api", help="run the HTTP API")
    sub.add_parser("scorer", help="run the stream processor (a Faust worker)")
    sub.add_parser("notifier", help="run the webhook notifier")
    sub.add_parser("topics", help="create the Kafka topics if missing")
    _backtest_parser(sub)
    # ---- intake (issue 12) ----
    sub.add_parser("intake", help="run the Kafka intake consumer (validated events from upstream Kafka producers)")
    from fatigue.importer_cli import add_import_parser

    add_import_parser(sub)
    _dlq_parser(sub)
    _customers_parser(sub)
    _repartition_parser(sub)
    return parser


def _partition_count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 1024:
        raise argparse.ArgumentTypeError(f"{text!r}: give a partition count from 1 to 1024")
    return int(text)


def _repartition_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "repartition", help="change the partition count: grow the events and profiles topics, move the state",
        description="With the intake stopped and the scorers caught up and stopped: checks that the scorer's "
        "group is empty and every record is processed, grows the events and profiles topics to N partitions, "
        "moves every customer whose partition changes and records N. Then start every service with "
        "FATIGUE_PARTITIONS=N. Run it again to finish an interrupted run "
        "(docs/operations.md#changing-the-partition-count). Exit status 0 done, 2 refused (nothing changed), "
        "1 Kafka or Redis not answering.")
    cmd.add_argument("--partitions", type=_partition_count, required=True, metavar="N",
                     help="the new partition count (more than the recorded one)")


def _dlq_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser("dlq", help="the dead-letter topic: list letters, publish them back after a fix",
                         description="Records a consumer could not process, kept with the reason "
                         "(docs/reliability.md).")
    actions = cmd.add_subparsers(dest="dlq_command", required=True)
    for name, help_text in (("list", "show the dead letters (position, time, stage, source, error, value)"),
                            ("replay", "publish the selected letters' original records back to their source topic")):
        action = actions.add_parser(name, help=help_text)
        action.add_argument("--stage", default=None, help="only this stage (scorer.decode, scorer.process, "
                            "notifier.dispatch, intake.validate)")
        action.add_argument("--topic", default=None, help="only letters from this source topic")
        action.add_argument("--since", type=_rfc3339_ms, default=None, metavar="RFC3339", help="failed at or after")
        action.add_argument("--until", type=_rfc3339_ms, default=None, metavar="RFC3339", help="failed before")
        action.add_argument("--limit", type=int, default=None, help="at most this many letters")
        if name == "list":
            action.add_argument("--json", action="store_true", help="one JSON object per letter and line")
        else:
            action.add_argument("--dry-run", action="store_true", help="say what would be replayed, send nothing")


def _rfc3339_ms(text: str) -> int:
    from services.contract import parse_rfc3339, to_ms

    try:
        return to_ms(parse_rfc3339(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _non_negative_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value <= 86_400:
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 to 86400 seconds")
    return value


def _backtest_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cmd = sub.add_parser(
        "backtest",
        help="replay a history offline through the same core, with a simulated clock",
        description="Replay a JSONL or CSV history of events through the scorer's core with a simulated clock "
        "and report what the policy would have done (docs/backtest.md).",
    )
    cmd.add_argument("events", type=Path, metavar="EVENTS", help="events file: .jsonl or .csv (contract v1 rows)")
    cmd.add_argument("--policy", type=Path, default=None, help="policy YAML (default: the packaged default)")
    cmd.add_argument("--profiles", type=Path, default=None,
                     help="profiles file: .jsonl or .csv rows of customer_id + profile fields [+ updated_at]")
    cmd.add_argument("--format", dest="fmt", choices=("jsonl", "csv"), default=None,
                     help="input format (default: from the file extension)")
    cmd.add_argument("--until", type=_rfc3339_ms, default=None, metavar="RFC3339",
                     help="run the simulated clock to this time (default: the last event's time)")
    cmd.add_argument("--producer", default="backtest",
                     help="producer name for de-duplication keys (default: backtest)")
    cmd.add_argument("--skip-invalid", action="store_true", help="skip and count invalid rows instead of stopping")
    cmd.add_argument("--customer", default=None, metavar="ID", help="print this customer's timeline")
    cmd.add_argument("--json", action="store_true", help="one JSON object per action and line")
    cmd.add_argument("--plot", type=Path, default=None, metavar="PNG",
                     help="write a weekly chart of actions (with --customer: that customer's timeline)")
    cmd.add_argument("--compare", type=Path, default=None, metavar="OTHER.yaml",
                     help="replay with this policy too and show both side by side")
    cmd.add_argument("--settle", dest="settle_s", type=_non_negative_seconds, default=DEFAULT_TIMER_SETTLE_S,
                     metavar="SECONDS", help="as the scorer's FATIGUE_TIMER_SETTLE_S: a customer's timers wait this "
                     "long after their latest arrival, and older events are history told once caught up "
                     f"(default: {DEFAULT_TIMER_SETTLE_S:g})")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    try:
        _dispatch(args)
    except FatigueError as exc:
        sys.stderr.write(f"fatigue {args.command}: {exc}\n")
        if exc.operator_action:
            sys.stderr.write(f"  what to do: {exc.operator_action}\n")
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C before a service installed its own handler: stop quietly
        raise SystemExit(130) from None


def _dispatch(args: argparse.Namespace) -> None:
    if args.command in ("up", "demo"):
        _up(args, demo=args.command == "demo" or args.demo)
    else:
        _COMMANDS[args.command](args)


def _api(_: argparse.Namespace) -> None:
    from ingest.app import main as api_main
    from scorer.dryrun import check_policy

    api_main(policy_check=check_policy)


def _scorer(_: argparse.Namespace) -> None:
    from scorer.app import main as scorer_main

    scorer_main()


def _notifier(_: argparse.Namespace) -> None:
    from notifier.app import main as notifier_main

    notifier_main()


def _topics(_: argparse.Namespace) -> None:
    from fatigue.runfile import located_settings
    from services.kafka import ensure_topics
    from services.settings import CommonSettings

    settings = located_settings("topics", CommonSettings, sys.stderr, kafka=True, redis=False)
    created = asyncio.run(ensure_topics(settings))
    sys.stdout.write(f"created: {', '.join(created) or 'nothing (all topics exist)'}\n")


def _intake(_: argparse.Namespace) -> None:
    from ingest.intake import main as intake_main

    intake_main()


def _import(args: argparse.Namespace) -> None:
    from fatigue.importer_cli import run_import

    raise SystemExit(run_import(args))


def _dlq(args: argparse.Namespace) -> None:
    from fatigue.dlq import Selection, run_list, run_replay
    from fatigue.runfile import located_settings
    from services.settings import CommonSettings

    settings = located_settings("dlq", CommonSettings, sys.stderr, kafka=True, redis=False)
    selection = Selection(stage=args.stage, topic=args.topic, since_ms=args.since, until_ms=args.until,
                          limit=args.limit)
    if args.dlq_command == "list":
        run_list(settings, selection, json_lines=args.json)
    else:
        run_replay(settings, selection, dry_run=args.dry_run)


def _backtest(args: argparse.Namespace) -> None:
    from scorer.backtest import Options, run

    options = Options(events=args.events, policy=args.policy, profiles=args.profiles, fmt=args.fmt,
                      until_ms=args.until, producer=args.producer, skip_invalid=args.skip_invalid,
                      customer=args.customer, json=args.json, plot=args.plot, compare=args.compare,
                      settle_s=args.settle_s)
    try:
        run(options, sys.stdout, sys.stderr)
        sys.stdout.flush()
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# ---- fatigue customers list (issue 10: the lists reps work from) ----


def _customers_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from services.contract import Stage, Tier
    from services.names import CUSTOMER_LISTS

    cmd = sub.add_parser("customers", help="the lists reps work from (read from Redis)")
    what = cmd.add_subparsers(dest="customers_command", required=True)
    ls = what.add_parser(
        "list", help="customers on a list, most urgent first",
        description="The customers on a list, most urgent first, as GET /v1/customers?list=... answers "
        "(REDIS_URL, FATIGUE_REDIS_PREFIX; docs/api.md).")
    ls.add_argument("list_name", choices=CUSTOMER_LISTS, metavar="LIST", help=" | ".join(CUSTOMER_LISTS))
    ls.add_argument("--owner-rep-id", default=None, help="only this rep's customers")
    ls.add_argument("--tier", choices=[t.value for t in Tier], default=None, help="only this tier")
    ls.add_argument("--stage", choices=[s.value for s in Stage], default=None, help="only this stage")
    ls.add_argument("--limit", type=int, default=50, choices=range(1, 501), metavar="N",
                    help="customers per page, 1-500 (default 50)")
    ls.add_argument("--cursor", default=None, help="continue after the page that printed this cursor")
    ls.add_argument("--all", dest="all_pages", action="store_true", help="every page, to the end")
    ls.add_argument("--json", action="store_true", help="one JSON object per customer and line")
    what.add_parser("reindex", help="put every stored customer on the list its state says (claims each "
                    "partition: running scorers give it up and take it back)")
    migrate = what.add_parser(
        "migrate", help="once, when upgrading: move the state of earlier versions (a key per customer) to the "
        "per-partition layout", description="Moves state:<id>, the lists, due times and offsets:<group> of "
        "earlier versions to each Kafka partition's keys (FATIGUE_PARTITIONS), with decision views and list "
        "entries computed from the states; deletes the old keys. Run it with the scorers stopped "
        "(docs/operations.md#upgrading-to-per-partition-state).")
    migrate.add_argument("--group", default="fatigue-scorer",
                         help="the scorer's FATIGUE_SCORER_APP_ID, whose stored offsets move (default fatigue-scorer)")
    show = what.add_parser(
        "show", help="one customer's snapshot (computed now from the stored state) or stored state, as JSON",
        description="Prints the customer's snapshot as GET /v1/customers/{id} computes it from the state the "
        "scorer stored (in whichever format: docs/architecture.md, 'Stored values'); --state prints the "
        "stored state itself. Exit status 1 when nothing is stored for the customer.")
    show.add_argument("customer_id", metavar="CUSTOMER_ID")
    show.add_argument("--state", action="store_true", help="the scorer's state instead of the snapshot")


def _customers(args: argparse.Namespace) -> None:
    from fatigue.customers import ListOptions, list_customers, migrate, not_repartitioning, reindex, show
    from fatigue.runfile import located_settings
    from services.settings import CommonSettings

    settings = located_settings("customers", CommonSettings, sys.stderr, kafka=False, redis=True)
    asyncio.run(not_repartitioning(settings))
    if args.customers_command == "reindex":
        asyncio.run(reindex(settings, sys.stdout))
        return
    if args.customers_command == "migrate":
        asyncio.run(migrate(settings, args.group, sys.stdout))
        return
    if args.customers_command == "show":
        if not asyncio.run(show(settings, args.customer_id, sys.stdout, state=args.state)):
            raise SystemExit(1)
        return
    options = ListOptions(args.list_name, args.owner_rep_id, args.tier, args.stage, args.limit, args.cursor,
                          args.all_pages, args.json)
    asyncio.run(list_customers(settings, options, sys.stdout))


def _repartition(args: argparse.Namespace) -> None:
    from fatigue.repartition import run
    from fatigue.runfile import located_settings
    from services.settings import ScorerSettings

    settings = located_settings("repartition", ScorerSettings, sys.stderr, kafka=True, redis=True)
    raise SystemExit(asyncio.run(run(settings, args.partitions, sys.stdout, sys.stderr)))


def _up(args: argparse.Namespace, *, demo: bool) -> None:
    from fatigue.supervisor import (
        StopRequest,
        announce,
        configure_output,
        log_format_for,
        make_plan,
        preflight_plan,
        recorded,
        say,
        work_folder,
    )

    log_format = log_format_for(dict(os.environ), sys.stdout.isatty())
    configure_output(log_format, os.environ.get("FATIGUE_LOG_LEVEL", "INFO"))
    preflight_plan(args.host, args.port, dict(os.environ))  # before anything starts
    stop = StopRequest()  # from here on Ctrl-C / SIGTERM stop what was started, never interrupt it half-way
    with work_folder(args.workdir) as workdir:
        plan = make_plan(args.host, args.port, workdir, log_format)
        try:
            with recorded(plan, workdir):
                if not stop.requested:
                    announce(plan)
                    asyncio.run(_run_up(plan, demo, args, stop))
        finally:
            stop.hold()  # asyncio restored the default handlers: let the clean-up finish
            if plan.embedded is not None:
                plan.embedded.stop()
                kept = f"logs are in {workdir}" if args.workdir else f"removed {workdir}"
                say(f"embedded broker and Redis stopped ({kept})")


async def _run_up(plan: object, demo: bool, args: argparse.Namespace, stop: object) -> None:
    from fatigue.supervisor import Plan, StopRequest, supervise

    assert isinstance(plan, Plan) and isinstance(stop, StopRequest)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    if stop.requested:  # a signal noted before the loop took them over
        stopping.set()
    extra: list[asyncio.Task[None]] = []
    if demo:
        from fatigue.demo import run_demo

        extra.append(asyncio.create_task(run_demo(plan, customers=args.customers, seed=args.seed)))
    with contextlib.suppress(asyncio.CancelledError):
        await supervise(plan, stopping, extra)


_COMMANDS = {
    "api": _api, "scorer": _scorer, "notifier": _notifier, "topics": _topics, "backtest": _backtest,
    "intake": _intake, "import": _import, "dlq": _dlq, "customers": _customers, "repartition": _repartition,
}


if __name__ == "__main__":
    main()
