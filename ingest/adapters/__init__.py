"""Provider adapters: a pure mapping from each provider's payload to contract-v1 events, and the
provider's own signature check. The routes (ingest/routers/adapters.py) resolve customers through
the identity map and store what maps through the shared accept path (ingest/accept.py)."""
