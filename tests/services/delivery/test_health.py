"""EndpointHealthStore against a real redis-server: failure counting, the circuit, probes, disabling."""

from __future__ import annotations

import pytest

from services.delivery.health import CircuitConfig, EndpointHealthStore, Health
from services.redisio import RedisClient
from tests.conftest import RedisTarget

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000
CONFIG = CircuitConfig(failure_threshold=3, open_s=10.0, max_open_s=25.0, probe_s=60.0, recheck_s=1.0,
                       disable_after_s=3600.0)


@pytest.fixture
def redis_client(redis_target: RedisTarget) -> RedisClient:
    """One Redis, then a Cluster: every Redis test of this module runs on both."""
    return redis_target.client


@pytest.fixture
def health(redis_client: RedisClient, redis_target: RedisTarget) -> EndpointHealthStore:
    return EndpointHealthStore(redis_client, redis_target.keys, CONFIG)


async def fail(health: EndpointHealthStore, at_ms: int, times: int = 1, status: int | None = 500) -> None:
    for _ in range(times):
        await health.record_failure("sub_a", at_ms, status=status, error=f"destination answered HTTP {status}")


async def test_an_unknown_endpoint_is_healthy_and_may_be_attempted(health: EndpointHealthStore) -> None:
    assert await health.get("sub_a") == Health()
    assert (await health.get("sub_a")).state() == "healthy"
    assert await health.gate("sub_a", T0) == 0


async def test_failures_below_the_threshold_keep_the_circuit_closed(health: EndpointHealthStore) -> None:
    await fail(health, T0, times=2)
    got = await health.get("sub_a")
    assert (got.consecutive_failures, got.failing_since_ms, got.circuit_open_until_ms) == (2, T0, None)
    assert (got.last_status, got.last_error, got.state()) == (500, "destination answered HTTP 500", "failing")
    assert await health.gate("sub_a", T0 + 1) == 0


async def test_the_threshold_opens_the_circuit_and_holds_deliveries_back(health: EndpointHealthStore) -> None:
    await fail(health, T0, times=2)
    verdict = await health.record_failure("sub_a", T0 + 500, status=None, error="no response within 2s")
    assert (verdict.failures, verdict.open_until_ms, verdict.opened, verdict.disable) == (3, T0 + 10_500, True, False)
    assert (await health.get("sub_a")).state() == "circuit_open"
    assert await health.gate("sub_a", T0 + 600) == 9_900
    # an attempt that was in flight when it opened fails too: the circuit is not extended
    late = await health.record_failure("sub_a", T0 + 700, status=500, error="x")
    assert (late.open_until_ms, late.opened) == (T0 + 10_500, False)


async def test_after_the_open_period_one_probe_goes_and_the_others_recheck(health: EndpointHealthStore) -> None:
    await fail(health, T0, times=3)
    assert await health.gate("sub_a", T0 + 10_000) == 0  # the probe
    assert await health.gate("sub_a", T0 + 10_001) == 1_000  # the others look again soon
    assert await health.gate("sub_a", T0 + 10_002) == 1_000


async def test_a_successful_probe_closes_the_circuit(health: EndpointHealthStore) -> None:
    await fail(health, T0, times=3)
    assert await health.gate("sub_a", T0 + 10_000) == 0
    assert await health.record_success("sub_a", T0 + 10_100) is True
    got = await health.get("sub_a")
    assert (got.state(), got.consecutive_failures, got.last_success_ms) == ("healthy", 0, T0 + 10_100)
    assert got.last_failure_ms == T0  # history kept for the operator
    assert await health.gate("sub_a", T0 + 10_101) == 0
    assert await health.record_success("sub_a", T0 + 10_200) is False  # was not open


async def test_a_failed_probe_opens_it_again_for_twice_as_long_capped(health: EndpointHealthStore) -> None:
    await fail(health, T0, times=3)  # open 10 s
    assert await health.gate("sub_a", T0 + 10_000) == 0
    second = await health.record_failure("sub_a", T0 + 10_000, status=503, error="x")
    assert (second.open_until_ms, second.opened) == (T0 + 30_000, True)  # 20 s
    assert await health.gate("sub_a", T0 + 30_000) == 0
    third = await health.record_failure("sub_a", T0 + 30_000, status=503, error="x")
    assert third.open_until_ms == T0 + 55_000  # 40 s capped at 25 s


async def test_failing_without_a_success_for_disable_after_says_disable(health: EndpointHealthStore) -> None:
    await fail(health, T0)
    assert not (await health.record_failure("sub_a", T0 + 3_599_999, status=500, error="x")).disable
    assert (await health.record_failure("sub_a", T0 + 3_600_000, status=500, error="x")).disable
    await health.record_success("sub_a", T0 + 3_600_001)  # a success starts the clock again
    assert not (await health.record_failure("sub_a", T0 + 3_700_000, status=500, error="x")).disable


async def test_a_disabled_subscription_reports_disabled_and_reset_forgets(health: EndpointHealthStore) -> None:
    await fail(health, T0, times=3)
    assert (await health.get("sub_a")).state(enabled=False) == "disabled"
    await health.reset("sub_a")
    assert await health.get("sub_a") == Health()


async def test_endpoints_are_independent(health: EndpointHealthStore) -> None:
    await fail(health, T0, times=3)
    many = await health.get_many(["sub_a", "sub_b"])
    assert (many["sub_a"].state(), many["sub_b"].state()) == ("circuit_open", "healthy")
    assert await health.gate("sub_b", T0) == 0
