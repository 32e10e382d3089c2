"""CloudEvents 1.0 structured mode on POST /v1/events: the unwrapping (pure) and the route."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from ingest.cloudevents import unwrap
from services.settings import IngestSettings
from tests.ingest.helpers import consume, event, value_of


def cloud_event(data: dict[str, Any], **attributes: Any) -> dict[str, Any]:
    return {"specversion": "1.0", "id": "ce-1", "source": "/crm/eu", "type": "com.example.crm.touch",
            "datacontenttype": "application/json", "data": data, **attributes}


def test_id_and_time_fill_what_data_lacks_but_never_override_it() -> None:
    data = {k: v for k, v in event().items() if k not in ("event_id", "occurred_at")}
    assert unwrap(cloud_event(data, time="2026-11-20T09:00:00Z")) == {
        **data, "event_id": "ce-1", "occurred_at": "2026-11-20T09:00:00Z"}
    assert unwrap(cloud_event(event(event_id="mine")))["event_id"] == "mine"


@pytest.mark.parametrize(("envelope", "reason"), [
    ({"id": "x", "source": "s", "type": "t", "data": {}}, "specversion"),
    (cloud_event({}, specversion="0.3"), "0.3"),
    (cloud_event({}, datacontenttype="text/xml"), "not JSON"),
    ({**cloud_event({}), "data_base64": "e30="}, "data_base64"),
    (cloud_event("a string"), "`data` must be"),  # type: ignore[arg-type]
    ([1], "JSON object"),
])
def test_what_is_not_a_usable_cloudevent_says_why(envelope: Any, reason: str) -> None:
    result = unwrap(envelope)
    assert isinstance(result, str) and reason in result


@pytest.mark.integration
async def test_structured_and_batch_modes(api: httpx.AsyncClient, settings: IngestSettings) -> None:
    one = await api.post("/v1/events", content=json.dumps(cloud_event(event(event_id="ce-a"))),
                         headers={"content-type": "application/cloudevents+json; charset=utf-8"})
    assert one.status_code == 202 and one.json()["accepted"] == 1, one.text
    batch = [cloud_event(event(event_id="ce-b")), cloud_event(event(event_id="ce-c", channel="fax")),
             cloud_event(event(event_id="ce-d"), specversion="2.0")]
    many = await api.post("/v1/events", content=json.dumps(batch),
                          headers={"content-type": "application/cloudevents-batch+json"})
    assert many.status_code == 202, many.text
    body = many.json()
    assert body["accepted"] == 1 and [r["index"] for r in body["rejected"]] == [1, 2]
    assert "channel" in body["rejected"][0]["error"] and "specversion" in body["rejected"][1]["error"]
    records = await consume(settings.kafka_bootstrap_servers, settings.events_topic, expected=2)
    assert sorted(value_of(r)["event"]["event_id"] for r in records) == ["ce-a", "ce-b"]
    wrong = await api.post("/v1/events", content=json.dumps(batch),
                           headers={"content-type": "application/cloudevents+json"})
    assert wrong.status_code == 422
