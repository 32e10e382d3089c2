"""The shared ground every service stands on; it imports no service and not the `fatigue` command.

Flat at the top, the kernel: the event contract (`contract`), the action record (`actions`), names
of topics, keys, headers and metrics (`names`, `metrics`), errors, settings, durations, Kafka and
Redis plumbing, logs and the snapshot reader. Two concerns with several modules have a folder:
- `services.policy`    the fatigue policy: model, YAML schema, store, resolver, pre-send decision
- `services.delivery`  webhook delivery state shared by the API and the notifier
"""
