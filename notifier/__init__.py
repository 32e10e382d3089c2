"""The notifier: reads actions from Kafka and delivers them as signed webhooks (docs/webhooks.md).

Modules, one responsibility each:
- `signing`  pure Standard Webhooks signatures and message ids
- `retry`    pure retry policy: which results are retried, and how long to wait
- `delivery` the HTTP sender (one action to one subscription, with retries)
- `ledger`   which (action, subscription) pairs were already delivered
- `dispatch` one action record to all matching subscriptions, concurrently
- `consumer` the Kafka loop: poll, dispatch, commit
- `app`      wiring from settings, metrics server, `main()` for `fatigue notifier`
"""
