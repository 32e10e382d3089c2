"""Readiness reflects Kafka and Redis; liveness does not depend on them."""

from __future__ import annotations

import pytest

from services.settings import CommonSettings
from tests.ingest.helpers import closed_port_address, ingest_settings_for, running_api

pytestmark = pytest.mark.integration


async def test_ready_when_both_answer(common_settings: CommonSettings) -> None:
    async with running_api(ingest_settings_for(common_settings)) as api:
        api.headers.pop("Authorization")
        response = await api.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"kafka": "ok", "redis": "ok"}}


@pytest.mark.parametrize("broken", ["kafka", "redis", "both"])
async def test_not_ready_names_what_failed(common_settings: CommonSettings, broken: str) -> None:
    overrides = {}
    if broken in ("kafka", "both"):
        overrides["kafka_bootstrap_servers"] = closed_port_address()
    if broken in ("redis", "both"):
        overrides["redis_url"] = f"redis://{closed_port_address()}/0"
    async with running_api(ingest_settings_for(common_settings, **overrides)) as api:
        ready = await api.get("/readyz")
        alive = await api.get("/healthz")
    assert ready.status_code == 503 and ready.json()["status"] == "unavailable"
    failed = {name for name, result in ready.json()["checks"].items() if result != "ok"}
    assert failed == ({"kafka", "redis"} if broken == "both" else {broken})
    assert all(r.startswith("error: ") for n, r in ready.json()["checks"].items() if n in failed)
    assert alive.status_code == 200
