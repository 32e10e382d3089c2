# Developer shortcuts. The README's two commands do not need make.
PY := .venv/bin/python

.PHONY: help install dev build-core up demo test test-kafka kafka lint bench bench-quick bench-extra bench-core bench-decode bench-decision bench-latency bench-delivery bench-backtest bench-import dictionary runbooks

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

install:  ## create .venv with the service's packages (and redis-server if missing)
	bash deploy/bootstrap.sh

dev:  ## .venv with test and lint tools too
	bash deploy/bootstrap.sh --dev

build-core:  ## recompile the core after editing scorer/core/ (in .venv from make dev; FATIGUE_COMPILE=0: pure Python)
	$(PY) setup.py -q build_ext --inplace
	@$(PY) -c 'from scorer.core.implementation import describe; print(describe())'

up: install  ## run everything on the embedded broker and Redis
	.venv/bin/fatigue up

demo: install  ## run everything plus the synthetic demo stream
	.venv/bin/fatigue demo

test: dev  ## the whole test suite (real broker and Redis started by fixtures)
	.venv/bin/pytest

kafka:  ## fetch Apache Kafka's broker jars from Maven Central (pinned, checksummed, cached; --dev does it too)
	bash deploy/fetch-kafka.sh

test-kafka: dev  ## only the Apache Kafka tier (tests/kafka/): a three-node KRaft cluster started by a fixture
	.venv/bin/pytest -m apache_kafka

lint: dev  ## ruff and mypy
	.venv/bin/ruff check .
	.venv/bin/mypy fatigue services ingest scorer notifier

bench: dev  ## the benchmark suite: table on stdout, JSON in bench/results/ (docs/performance.md, with how long it takes)
	nice -n 5 $(PY) -m bench.suite

bench-quick: dev  ## the suite at reduced sizes (a few minutes): run it for every change to a hot path
	nice -n 5 $(PY) -m bench.suite --quick

bench-extra: bench-core bench-decode bench-decision bench-latency bench-delivery bench-backtest bench-import  ## the standalone benchmarks

bench-core: dev  ## the core alone, compiled and pure Python: events/s on one core, bytes of state per customer
	$(PY) -m bench.core_throughput --customers 100000 --events 200000 --runs 5

bench-decode: dev  ## the scorer's record decoding: µs per record, pydantic alone vs the msgspec fast path
	$(PY) -m bench.decode --events 20000 --rounds 7

bench-decision: dev  ## pre-send decision: stored snapshot decoded + decide, per second on one core
	$(PY) -m bench.decision --customers 2000 --runs 5

bench-latency: dev  ## POST /v1/events -> signed webhook received, through the whole stack
	$(PY) -m bench.alert_latency --rounds 30

bench-delivery: dev  ## notifier sending side: fan-out deliveries/s and a per-rep storm folded into one digest
	$(PY) -m bench.delivery_throughput --deliveries 5000 --subscriptions 8 --storm 2000 --runs 3

bench-backtest: dev  ## fatigue backtest replay: events/s and timers fired over ~105k events, vs firing every timer
	$(PY) -m bench.backtest --customers 12000 --runs 3 --every-timer

bench-import: dev  ## fatigue import of 1,000,000 events: events/s and the importer's peak RSS
	$(PY) -m bench.import_throughput --events 1000000 --customers 50000

dictionary: dev  ## train a new zstd dictionary for stored states and snapshots (services/zstd_dictionaries/)
	$(PY) -m bench.train_dictionary

runbooks: install  ## point the alerts' runbook links at FATIGUE_RUNBOOK_BASE_URL (the URL of your docs/operations.md)
	@test -n "$(FATIGUE_RUNBOOK_BASE_URL)" || { echo "set FATIGUE_RUNBOOK_BASE_URL=<absolute URL of docs/operations.md>"; exit 2; }
	$(PY) -m fatigue.runbooks --base-url "$(FATIGUE_RUNBOOK_BASE_URL)"
