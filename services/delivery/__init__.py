"""Webhook delivery state, shared by the API (reads, replays) and the notifier (sends).

- `subscriptions`  who receives which actions, in which format, with which secrets
- `store`          one delivery record per (action, subscription): pending, delivered, failed
- `health`         per-endpoint health and circuit breaker (one Redis hash per subscription)
- `digests`        per-rep digests that fold alert storms into one message
- `destinations`   the SSRF guard: which webhook destinations may be reached
"""
