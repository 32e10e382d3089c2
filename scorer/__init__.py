"""The stream processor: per-customer rolling windows and the fatigue policy, turned into actions."""
