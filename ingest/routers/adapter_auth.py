"""Who calls a provider webhook route, and how much it may send (docs/adapters.md#authentication).

Providers cannot send our bearer key, so each webhook route authenticates on its own, before it
parses anything (an unauthenticated request is 401 whatever its body):
- a provider whose signing key is configured must sign, in its own scheme: nothing else counts;
- otherwise `?token=` equal to the adapter's FATIGUE_<PROVIDER>_TOKEN (compared in constant time),
  or `Authorization: Bearer <api key>` with the ingest scope;
- neither: 401, nothing ingested.

Then the caller's rate, on the API's one limiter (ingest/auth.py): a bearer key is limited by its
own rate; a signature or a URL token is the provider's credential, limited by
FATIGUE_ADAPTER_RATE_LIMIT in the bucket `adapter:<provider>`. A request is admitted (else 429 with
Retry-After: the provider retries later) and, once its items are counted, charged one per item
beyond the first, like POST /v1/events.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

from fastapi import Request
from pydantic import SecretStr

from ingest.adapters.common import TooManyRecords
from ingest.adapters.intake import producer_of
from ingest.auth import match_api_key
from ingest.deps import admit, rate_limited
from ingest.errors import ApiError
from services.apikeys import SCOPE_INGEST, Rate
from services.metrics import IngestMetrics


@dataclass(frozen=True)
class Caller:
    """The credential a webhook call came with: the rate bucket it is charged to."""

    bucket: str
    rate: Rate | None
    who: str
    """How a 429 names it."""


def refused(metrics: IngestMetrics, provider: str, reason: str, message: str) -> ApiError:
    """401, counted in fatigue_ingest_adapter_requests_refused_total{provider, reason}."""
    metrics.adapter_refused.labels(provider=provider, reason=reason).inc()
    return ApiError(401, "unauthorized", message)


def provider_caller(request: Request, provider: str) -> Caller:
    """The provider itself (a verified signature, or its URL token)."""
    return Caller(producer_of(provider), request.app.state.adapter_rate,
                  f"the {provider} adapter (FATIGUE_ADAPTER_RATE_LIMIT)")


def token_or_key(request: Request, metrics: IngestMetrics, provider: str, token: SecretStr | None,
                 key_setting: str | None) -> Caller:
    """`?token=` equal to the adapter's token, or a bearer API key with the ingest scope; 401 otherwise."""
    given = request.query_params.get("token")
    if token is not None and given is not None:
        if hmac.compare_digest(given.encode(), token.get_secret_value().encode()):
            return provider_caller(request, provider)
    else:
        scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
        key = match_api_key(credentials.strip(), request.app.state.api_keys) if scheme.lower() == "bearer" else None
        if key is not None and key.may(SCOPE_INGEST):
            request.state.api_key_name = key.name  # the access log names the key, never shows it
            return Caller(key.name, key.rate, f"API key {key.name!r}")
    hint = f" (or configure {key_setting} to verify the provider's signature)" if key_setting else ""
    raise refused(metrics, provider, "unauthenticated", f"{provider}: no valid ?token= or bearer API key{hint}")


def admitted(request: Request, metrics: IngestMetrics, provider: str, caller: Caller) -> None:
    """Admit the call against the caller's rate; 429 with Retry-After when it is over it."""
    if caller.rate is not None and (wait_s := admit(request, caller.bucket, caller.rate)):
        metrics.adapter_refused.labels(provider=provider, reason="rate_limited").inc()
        raise rate_limited(caller.who, caller.rate, wait_s)


def too_many(metrics: IngestMetrics, provider: str, exc: TooManyRecords, setting: str) -> ApiError:
    """413 naming the count and the limit: the request is refused whole, nothing ingested."""
    metrics.adapter_refused.labels(provider=provider, reason="too_many_records").inc()
    return ApiError(413, "too_many_events", f"{provider}: {exc} ({setting}); nothing was ingested, "
                    "send them in smaller requests", extra={"received": exc.count, "limit": exc.limit})
