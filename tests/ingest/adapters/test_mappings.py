"""Each provider's pure mapping, on the provider's documented sample payloads (fixtures/README.md)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.adapters import crm, mailgun, sendgrid, twilio
from ingest.identity import Identity
from services.contract import EventIn
from tests.ingest.adapters.samples import load_form, load_json

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
MESSAGE = "msg:14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"


def contract_valid(event: dict) -> EventIn:
    return EventIn.model_validate({"customer_id": "probe", **event})


def test_sendgrid_sample_maps_every_event_type() -> None:
    mapped = sendgrid.map_events(load_json("sendgrid_events.json"))
    by_source = {c.source["event"]: c.event for c in mapped.candidates}
    assert by_source["processed"]["event_id"] == by_source["delivered"]["event_id"] == MESSAGE  # one touch
    assert {k: v for k, v in by_source["delivered"].items()} == {
        "event_id": MESSAGE, "type": "touch", "channel": "email", "occurred_at": "2017-12-15T00:59:29+00:00"}
    kinds = {name: (e["type"], e.get("kind"), e.get("in_reply_to")) for name, e in by_source.items()}
    assert kinds == {
        "processed": ("touch", None, None), "delivered": ("touch", None, None),
        "open": ("response", "open", MESSAGE), "click": ("response", "click", MESSAGE),
        "bounce": ("response", "bounce", MESSAGE), "dropped": ("response", "bounce", MESSAGE),
        "spamreport": ("response", "complaint", MESSAGE), "unsubscribe": ("response", "unsubscribe", MESSAGE),
        "group_unsubscribe": ("response", "unsubscribe", MESSAGE),
        "group_resubscribe": ("response", "resubscribe", MESSAGE),
    }
    assert by_source["open"]["event_id"] == "FOTFFO0ecsBE-zxFXfs6WA=="  # SendGrid's sg_event_id
    assert [reason for _, reason in mapped.ignored] == ["event 'deferred' is not a touch or a response"]
    for candidate in mapped.candidates:
        contract_valid(candidate.event)


def test_sendgrid_customer_is_the_custom_arg_else_the_email() -> None:
    mapped = sendgrid.map_events(load_json("sendgrid_events.json"))
    click = next(c for c in mapped.candidates if c.source["event"] == "click")
    assert click.event["customer_id"] == "cust-042" and click.identity is None
    opened = next(c for c in mapped.candidates if c.source["event"] == "open")
    assert "customer_id" not in opened.event and opened.identity == Identity("email", "example@test.com")


@pytest.mark.parametrize("payload", [{}, [], [1, "x", None], [{"event": "open"}], [{"event": "delivered"}]])
def test_sendgrid_odd_items_are_ignored_not_failed(payload: object) -> None:
    mapped = sendgrid.map_events(payload)
    assert mapped.candidates == []


@pytest.mark.parametrize(("name", "expected"), [
    ("mailgun_delivered.json", {"event_id": "msg:20130503182626.18666.16540@sandbox.mailgun.org", "type": "touch"}),
    ("mailgun_opened.json", {"event_id": "Ase7i2zsRYeDXztHGENqRA", "type": "response", "kind": "open",
                             "in_reply_to": "msg:20130503182626.18666.16540@sandbox.mailgun.org"}),
    ("mailgun_failed_permanent.json", {"event_id": "G9Bn5sl1TC6nu79C8C0bwg", "type": "response", "kind": "bounce",
                                       "in_reply_to": "msg:20130503192659.13651.20287@sandbox.mailgun.org"}),
])
def test_mailgun_samples(name: str, expected: dict) -> None:
    (candidate,) = mailgun.map_event(load_json(name)).candidates
    assert {k: candidate.event[k] for k in expected} == expected
    assert candidate.event["channel"] == "email" and candidate.identity == Identity("email", "alice@example.com")
    contract_valid(candidate.event)


def test_mailgun_temporary_failure_is_ignored_and_user_variable_names_the_customer() -> None:
    assert mailgun.map_event(load_json("mailgun_failed_temporary.json")).candidates == []
    body = load_json("mailgun_delivered.json")
    body["event-data"]["user-variables"]["customer_id"] = "cust-7"
    (candidate,) = mailgun.map_event(body).candidates
    assert candidate.event["customer_id"] == "cust-7" and candidate.identity is None


def test_mailgun_signature_is_hmac_sha256_of_timestamp_and_token() -> None:
    sig = {"timestamp": "1529006854", "token": "a8ce0edb2dd8301dee6c2405235584e45aa91d1e9f979f3de0"}
    good = {**sig, "signature": mailgun.signature_of(b"key-123", sig["timestamp"], sig["token"])}
    assert mailgun.verify(b"key-123", good)
    assert not mailgun.verify(b"key-456", good)
    assert not mailgun.verify(b"key-123", {**good, "token": "x" + sig["token"][1:]})
    assert not mailgun.verify(b"key-123", None) and not mailgun.verify(b"key-123", {"timestamp": 1})
    assert mailgun.fresh(good, 1529006854 + 299, 300) and not mailgun.fresh(good, 1529006854 + 301, 300)


def test_twilio_signature_matches_the_documented_example() -> None:
    vector = load_json("twilio_signature_vector.json")
    params = list(vector["params"].items())
    assert twilio.signature_of(vector["auth_token"].encode(), vector["url"], params) == vector["signature"]
    assert twilio.verify(vector["auth_token"].encode(), vector["url"], params, vector["signature"])
    assert not twilio.verify(b"54321", vector["url"], params, vector["signature"])
    assert not twilio.verify(vector["auth_token"].encode(), vector["url"] + "&baz=3", params, vector["signature"])
    assert not twilio.verify(vector["auth_token"].encode(), vector["url"], params, None)


def test_twilio_url_variants_with_and_without_the_default_port() -> None:
    assert twilio.url_variants("https://a.example/x?y=1") == ["https://a.example/x?y=1",
                                                              "https://a.example:443/x?y=1"]
    assert twilio.url_variants("https://a.example:443/x") == ["https://a.example:443/x", "https://a.example/x"]
    assert twilio.url_variants("https://a.example:8443/x") == ["https://a.example:8443/x"]


def test_twilio_status_callback_is_the_touch_once_sent() -> None:
    (candidate,) = twilio.map_status(load_form("twilio_status_delivered.txt"), None, NOW, None).candidates
    assert candidate.event == {"event_id": "msg:SM2xxxxxx", "type": "touch", "channel": "sms",
                               "occurred_at": NOW.isoformat()}
    assert candidate.identity == Identity("phone", "+15558675310")  # the recipient: To
    params = [(k, "queued" if k in ("MessageStatus", "SmsStatus") else v)
              for k, v in load_form("twilio_status_delivered.txt")]
    assert twilio.map_status(params, None, NOW, None).candidates == []
    failed = [(k, "undelivered" if k in ("MessageStatus", "SmsStatus") else v)
              for k, v in load_form("twilio_status_delivered.txt")]
    (bounce,) = twilio.map_status(failed, "cust-9", NOW, None).candidates
    assert (bounce.event["kind"], bounce.event["in_reply_to"], bounce.event["customer_id"]) == (
        "bounce", "msg:SM2xxxxxx", "cust-9")


@pytest.mark.parametrize(("body", "opt_out_type", "kind"), [
    ("STOP", None, "unsubscribe"), (" stop ", None, "unsubscribe"), ("StopAll", None, "unsubscribe"),
    ("UNSUBSCRIBE", None, "unsubscribe"), ("cancel", None, "unsubscribe"), ("END", None, "unsubscribe"),
    ("quit", None, "unsubscribe"), ("START", None, "resubscribe"), ("yes", None, "resubscribe"),
    ("Unstop", None, "resubscribe"), ("please stop texting me", None, "reply"), ("HELP", None, "reply"),
    ("Arrêt", "STOP", "unsubscribe"), ("Oui", "START", "resubscribe"), ("Sure thing", None, "reply"),
])
def test_twilio_keywords(body: str, opt_out_type: str | None, kind: str) -> None:
    assert twilio.response_kind(body, opt_out_type) == kind


def test_twilio_inbound_samples() -> None:
    (stop,) = twilio.map_inbound(load_form("twilio_inbound_stop.txt"), None, NOW, None).candidates
    assert (stop.event["kind"], stop.event["channel"], stop.identity) == (
        "unsubscribe", "sms", Identity("phone", "+15558675310"))  # the sender: From
    (reply,) = twilio.map_inbound(load_form("twilio_inbound_reply.txt"), None, NOW, None).candidates
    assert reply.event["kind"] == "reply" and reply.event["event_id"] == "SM9f8e7d6c5b4a39281706f5e4d3c2b1a0"
    contract_valid(reply.event)


def test_hubspot_engagement_call_is_a_phone_touch_of_the_associated_contact() -> None:
    mapping = crm.load_mappings()["hubspot-engagement"]
    (candidate,) = crm.map_records(mapping, load_json("hubspot_engagement_call.json")).candidates
    assert candidate.event == {
        "event_id": "engagement:29090716", "customer_id": "247", "type": "touch", "channel": "phone",
        "occurred_at": "2015-10-07T13:10:00.781000+00:00", "rep_id": "70",
        "attributes": {"hubspot_type": "CALL", "call_status": "COMPLETED", "duration_ms": 38000}}
    contract_valid(candidate.event)
    note = load_json("hubspot_engagement_call.json")
    note["engagement"]["type"] = "NOTE"
    assert crm.map_records(mapping, note).ignored == [(0, "engagement.type is 'NOTE'")]


def test_hubspot_v3_calls_outbound_touch_inbound_response() -> None:
    mapping = crm.load_mappings()["hubspot-call"]
    out, back = crm.map_records(mapping, load_json("hubspot_calls_search.json")).candidates
    assert (out.event["type"], out.event.get("kind"), out.event["customer_id"]) == ("touch", None, "101")
    assert (back.event["type"], back.event["kind"]) == ("response", "call_answered")
    assert out.event["occurred_at"] == "2021-03-03T01:02:44.872Z"
    contract_valid(out.event)
    contract_valid(back.event)


def test_salesforce_tasks_completed_only_with_salesforce_offsets_read() -> None:
    mapping = crm.load_mappings()["salesforce-task"]
    mapped = crm.map_records(mapping, load_json("salesforce_tasks_query.json"))
    call, email = mapped.candidates
    assert call.event["channel"] == "phone" and email.event["channel"] == "email"
    assert call.event["occurred_at"] == "2024-05-02T14:30:00.000+00:00"
    assert (call.event["customer_id"], call.event["rep_id"]) == ("0035e00000Ab12CAAR", "0055e000003FgHiAAK")
    assert mapped.ignored == [(2, "Status is 'Not Started'")]
    for candidate in mapped.candidates:
        contract_valid(candidate.event)


def test_salesforce_event_is_a_meeting() -> None:
    mapping = crm.load_mappings()["salesforce-event"]
    (candidate,) = crm.map_records(mapping, load_json("salesforce_event.json")).candidates
    assert (candidate.event["event_id"], candidate.event["channel"], candidate.event["occurred_at"]) == (
        "event:00U5e00000D4f2GEAR", "meeting", "2024-05-06T08:00:00.000+00:00")


@pytest.mark.parametrize(("path", "value"), [
    ("a.b[1].c", 2), ("a.b.1.c", 2), ("a.b[5].c", None), ("a.x", None), ("a.b.c", None), ("a.b[0]", {"c": 1}),
])
def test_crm_paths(path: str, value: object) -> None:
    assert crm.lookup({"a": {"b": [{"c": 1}, {"c": 2}]}}, path) == value


def test_a_mapping_file_that_names_unknown_fields_is_refused(tmp_path) -> None:
    (tmp_path / "bad.yaml").write_text("name: bad\nfields: {event_id: {path: id}, colour: {value: red}}\n")
    with pytest.raises(Exception, match="unknown fields"):
        crm.load_mappings(tmp_path)


def test_a_sendgrid_key_that_is_not_a_public_key_stops_the_api() -> None:
    from ingest.app import create_app
    from services.errors import ConfigError
    from tests.ingest.helpers import ingest_settings_for

    with pytest.raises(sendgrid.InvalidKey):
        sendgrid.load_public_key("bm90IGEga2V5")
    with pytest.raises(ConfigError, match="FATIGUE_SENDGRID_VERIFICATION_KEY"):
        create_app(ingest_settings_for(sendgrid_verification_key="%%%"))


def test_sendgrid_signature_round_trip_and_tampering() -> None:
    from tests.ingest.adapters.samples import SendGridSigner

    signer = SendGridSigner()
    key = sendgrid.load_public_key(signer.public_key_b64)
    body = b'[{"event":"open"}]'
    good = signer.sign("1700000000", body)
    assert sendgrid.verify(key, good, "1700000000", body)
    assert not sendgrid.verify(key, good, "1700000001", body)
    assert not sendgrid.verify(key, good, "1700000000", body + b"\n")
    assert not sendgrid.verify(key, None, "1700000000", body) and not sendgrid.verify(key, "!!", "1", body)
    assert not sendgrid.verify(sendgrid.load_public_key(SendGridSigner().public_key_b64), good, "1700000000", body)


@pytest.mark.parametrize("item", [
    {"event": "open", "sg_event_id": "x", "timestamp": 1e30, "email": "a@b.c"},
    {"event": "open", "sg_event_id": "x", "timestamp": "soon", "email": "a@b.c"},
    {"event": "open", "sg_event_id": "x", "timestamp": 1700000000, "customer_id": "bad id with spaces"},
])
def test_hostile_sendgrid_items_become_contract_rejections_not_errors(item: dict) -> None:
    (candidate,) = sendgrid.map_events([item]).candidates
    with pytest.raises(ValueError):
        contract_valid(candidate.event)
