"""The provider sample payloads under fixtures/ (sources in fixtures/README.md) and signing helpers
that play the provider's part in the tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

FIXTURES = Path(__file__).parent / "fixtures"


def load_json(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def load_form(name: str) -> list[tuple[str, str]]:
    return parse_qsl((FIXTURES / name).read_text().strip(), keep_blank_values=True)


class SendGridSigner:
    """A P-256 key pair as SendGrid holds it; `public_key_b64` is what its console shows."""

    def __init__(self) -> None:
        self._private = ec.generate_private_key(ec.SECP256R1())
        der = self._private.public_key().public_bytes(serialization.Encoding.DER,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo)
        self.public_key_b64 = base64.b64encode(der).decode()

    def sign(self, timestamp: str, body: bytes) -> str:
        signature = self._private.sign(timestamp.encode() + body, ec.ECDSA(hashes.SHA256()))
        return base64.b64encode(signature).decode()


def mailgun_sign(body: dict[str, Any], key: str, timestamp: int, token: str) -> dict[str, Any]:
    digest = hmac.new(key.encode(), f"{timestamp}{token}".encode(), hashlib.sha256).hexdigest()
    return {**body, "signature": {"timestamp": str(timestamp), "token": token, "signature": digest}}


def twilio_sign(token: str, url: str, params: list[tuple[str, str]]) -> str:
    data = url + "".join(k + v for k, v in sorted(params))
    return base64.b64encode(hmac.new(token.encode(), data.encode(), hashlib.sha1).digest()).decode()
