"""The `fatigue` command and everything that assembles or starts the whole stack.

The composition root: the only package that imports `ingest`, `scorer` and `notifier` together.
- `cli`         the `fatigue` command: `up`, `demo`, one service, `topics`, `backtest`
- `supervisor`  `fatigue up`: runs each service as a child process and restarts it if it dies
- `embedded`    the embedded Kafka-protocol broker (Tansu) and redis-server on loopback
- `kafka_cluster` Apache Kafka itself on loopback (1 or 3 KRaft nodes) for its test tier and the benchmark
- `demo`        `fatigue demo`: a synthetic stream posted through the API, a verifying webhook sink
- `demo_data`   the synthetic customers and their touches and responses (seeded, deterministic)
- `healthcheck` the container HEALTHCHECK: `/healthz` of whichever service the container runs
"""
