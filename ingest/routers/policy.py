"""GET /v1/policy and PUT /v1/policy: read and replace the fatigue policy the scorer hot-reloads.

The policy is validated before anything is stored: an invalid document is answered 422 with
`policy:LINE: field: reason` and the previous policy stays in force. See docs/policy.md.
"""

from __future__ import annotations

import functools
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse, Response

from ingest.deps import NEEDS_READ, AdminKey, AuthenticatedRoute, PolicyStoreDep
from ingest.errors import ApiError
from ingest.schemas import ErrorOut, PolicyOut
from ingest.validation import BodyRefused, json_type, parse_json
from services.errors import PolicyError
from services.policy.model import DEFAULT_POLICY_FILE, MAX_YAML_DEPTH, parse_policy
from services.policy.store import (
    PolicyStore,
    PolicyVersionMismatch,
    StoredPolicy,
    policy_values,
    sha256_of,
    yaml_text_of_json,
)

log = logging.getLogger(__name__)

router = APIRouter(tags=["policy"], route_class=AuthenticatedRoute)

YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")
TEXT_TYPES = (*YAML_TYPES, "text/plain")
JSON_TYPE = "application/json"
SOURCE = "policy"
"""How error messages name the document: `policy:3: frequency: …`."""

_YAML_SCHEMA = {"type": "string", "description": "A policy YAML document (docs/policy.md)."}
PUT_BODY = {
    "required": True,
    "description": "The whole policy as YAML (application/yaml, text/yaml, text/plain) or as a JSON object. "
    "Omitted settings take their defaults.",
    "content": {
        "application/yaml": {
            "schema": _YAML_SCHEMA,
            "example": "frequency:\n  throttle_above: 5\n  recover_at_or_below: 2\n",
        },
        "text/yaml": {"schema": _YAML_SCHEMA},
        "text/plain": {"schema": _YAML_SCHEMA},
        JSON_TYPE: {"schema": {"$ref": "#/components/schemas/PolicyDoc"}},
    },
}
_ANSWER_YAML = {"application/yaml": {"schema": _YAML_SCHEMA}}


def prefers_yaml(accept: str | None) -> bool:
    """True when the Accept header ranks a YAML type above JSON (JSON on ties and by default)."""
    best_yaml = best_json = 0.0
    for item in (accept or "").split(","):
        media, _, params = item.strip().partition(";")
        quality = _quality(params)
        media = media.strip().lower()
        if media in YAML_TYPES:
            best_yaml = max(best_yaml, quality)
        elif media in (JSON_TYPE, "application/*", "*/*"):
            best_json = max(best_json, quality)
    return best_yaml > best_json


def _quality(params: str) -> float:
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "q":
            try:
                return float(value)
            except ValueError:
                return 0.0
    return 1.0


def parse_if_match(value: str | None) -> int | None:
    """`If-Match: "3"` (or `3`) -> 3; absent or `*` -> None (no condition); 0 means "nothing stored yet"."""
    if value is None or value.strip() == "*":
        return None
    tag = value.strip().removeprefix("W/").strip('"')
    if not tag.isdigit():
        message = f'If-Match must be one policy version as returned in ETag, e.g. "3"; got {value!r}'
        raise ApiError(400, "bad_request", message)
    return int(tag)


def policy_document(content_type: str | None, raw: bytes) -> str:
    """The YAML text of a PUT body; ApiError 400/415/422 when it cannot be a policy."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media == JSON_TYPE:
        return _json_document(raw)
    if media not in TEXT_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            f"Content-Type {media or '(none)'!r} is not supported; send the policy as "
            f"{', '.join(('application/yaml', 'text/yaml', 'text/plain', JSON_TYPE))}",
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ApiError(422, "invalid_policy", f"{SOURCE}: the body is not UTF-8 text: {exc}") from exc
    if not text.strip():
        raise ApiError(
            422, "invalid_policy", f"{SOURCE}: the body is empty; send a policy document ('{{}}' means all defaults)"
        )
    return text


def _json_document(raw: bytes) -> str:
    try:
        obj = parse_json(raw, max_depth=MAX_YAML_DEPTH)
    except BodyRefused as exc:
        raise ApiError(exc.status, exc.code, exc.message) from exc
    if not isinstance(obj, dict):
        raise ApiError(422, "invalid_policy", f"{SOURCE}: the policy must be a JSON object, not {json_type(obj)}")
    return yaml_text_of_json(obj, raw.decode("utf-8"))


@functools.cache
def _packaged_default() -> str:
    return DEFAULT_POLICY_FILE.read_text(encoding="utf-8")


def _out(stored: StoredPolicy | None) -> PolicyOut:
    if stored is None:
        text = _packaged_default()
        values = policy_values(text)
        return PolicyOut(version=None, source="default", updated_at=None, sha256=sha256_of(text), yaml=text,
                         policy=values)
    valid: dict[str, Any] | None
    problem: str | None
    try:
        parse_policy(stored.yaml, f"stored policy v{stored.version}")
    except PolicyError as exc:
        valid, problem = None, str(exc)
    else:
        valid, problem = policy_values(stored.yaml), stored.problem
    return PolicyOut(
        version=stored.version,
        source="api",
        updated_at=stored.updated_at,
        sha256=stored.sha256,
        yaml=stored.yaml,
        policy=valid,
        problem=problem,
    )


def _etag(out: PolicyOut) -> dict[str, str]:
    return {"ETag": f'"{out.version or 0}"'}


async def _stored(store: PolicyStore) -> StoredPolicy | PolicyOut | None:
    try:
        return await store.get()
    except PolicyError as exc:  # written into Redis by hand: say so, it is not the caller's fault
        return PolicyOut(version=None, source="api", updated_at=None, sha256=sha256_of(""), yaml="", policy=None,
                         problem=f"{exc}; replace it with PUT /v1/policy")


@router.get(
    "/policy",
    response_model=PolicyOut,
    dependencies=[NEEDS_READ],
    summary="The stored fatigue policy (or the packaged default when none is stored)",
    description="The policy stored through PUT /v1/policy, or the packaged default when none is stored. "
    "`Accept: application/yaml` answers the YAML document alone. The ETag is the version (\"0\": none stored).",
    responses={
        200: {"content": _ANSWER_YAML},
        503: {"model": ErrorOut, "description": "The store (Redis) did not answer."},
    },
)
async def get_policy(request: Request, store: PolicyStoreDep) -> Response:
    stored = await _stored(store)
    out = stored if isinstance(stored, PolicyOut) else _out(stored)
    if prefers_yaml(request.headers.get("accept")):
        return Response(out.yaml, media_type="application/yaml", headers=_etag(out))
    return JSONResponse(out.model_dump(mode="json"), headers=_etag(out))


@router.put(
    "/policy",
    response_model=PolicyOut,
    summary="Replace the fatigue policy",
    description="Validates the document, then stores it as the next version; the scorer applies it within "
    "FATIGUE_POLICY_POLL_S without a restart. An invalid document is refused (422, with line and reason) "
    "and nothing changes. With `If-Match: \"<version>\"` the policy is replaced only if that version is "
    "still the stored one (`\"0\"`: only if none is stored yet), else 412.",
    responses={
        400: {"model": ErrorOut, "description": "A JSON body is not valid JSON, or If-Match is not a version."},
        412: {"model": ErrorOut, "description": "If-Match does not name the stored version; nothing changed."},
        413: {"model": ErrorOut, "description": "Body larger than FATIGUE_MAX_BODY_BYTES."},
        415: {"model": ErrorOut, "description": "Content-Type is not YAML, text or JSON."},
        422: {"model": ErrorOut, "description": "Invalid policy (`invalid_policy`: policy:LINE: field: reason), "
              "or one the scorer's core cannot run (dry run of a canned history); nothing changed."},
        503: {"model": ErrorOut, "description": "The store (Redis) did not answer; nothing changed."},
    },
    openapi_extra={"requestBody": PUT_BODY},
)
async def put_policy(
    request: Request,
    api_key: AdminKey,
    store: PolicyStoreDep,
    if_match: Annotated[
        str | None, Header(alias="If-Match", description='Replace only if this version is stored, e.g. "3".')
    ] = None,
) -> JSONResponse:
    expected = parse_if_match(if_match)
    text = policy_document(request.headers.get("content-type"), await request.body())
    try:
        stored = await store.put(text, SOURCE, expected_version=expected, check=request.app.state.policy_check)
    except PolicyError as exc:
        raise ApiError(422, "invalid_policy", str(exc)) from exc
    except PolicyVersionMismatch as exc:
        raise ApiError(412, "precondition_failed", f"{exc}; GET /v1/policy and apply your change to it") from exc
    log.info("policy v%d stored by %s (sha256 %s)", stored.version, api_key.name, stored.sha256[:12])
    out = _out(stored)
    return JSONResponse(out.model_dump(mode="json"), headers=_etag(out))



@router.delete(
    "/policy",
    status_code=204,
    summary="Remove the stored policy (back to the scorer's policy file)",
    description="The scorer falls back to FATIGUE_POLICY_FILE (or the packaged default) within "
    "FATIGUE_POLICY_POLL_S. Idempotent: 204 also when none is stored. Honours If-Match like PUT.",
    responses={
        412: {"model": ErrorOut, "description": "If-Match does not name the stored version; nothing changed."},
        503: {"model": ErrorOut, "description": "The store (Redis) did not answer; nothing changed."},
    },
)
async def delete_policy(
    api_key: AdminKey,
    store: PolicyStoreDep,
    if_match: Annotated[
        str | None, Header(alias="If-Match", description='Remove only if this version is stored, e.g. "3".')
    ] = None,
) -> Response:
    try:
        removed = await store.delete(expected_version=parse_if_match(if_match))
    except PolicyVersionMismatch as exc:
        raise ApiError(412, "precondition_failed", f"{exc}; GET /v1/policy and decide again") from exc
    if removed is not None:
        log.info("policy v%d removed by %s; the scorers' policy file applies", removed, api_key.name)
    return Response(status_code=204)
