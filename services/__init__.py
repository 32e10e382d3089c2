"""What every service shares: the event contract, settings, names, Kafka/Redis plumbing, the CLI."""
