"""Kafka security settings (FATIGUE_KAFKA_*): validation, the aiokafka arguments every client gets,
Faust's credentials, and the services end to end over mutual TLS.

The unit tests need no broker; the CA and certificates are made by the `openssl` command. The
integration tests put a TLS listener (the stdlib's, requiring a client certificate) in front of a
dedicated Tansu that advertises it, because Tansu 0.6.0 has no TLS listener of its own; SASL
could not be tried here (docs/configuration.md#kafka-security says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import ValidationError
from redis.asyncio import Redis

from fatigue.embedded import LOOPBACK, EmbeddedStack, free_port, tansu_binary, wait_for_port
from notifier.app import make_consumer
from scorer.app import Scorer
from scorer.transport import faust_credentials
from services.errors import BrokerUnavailable, ConfigError
from services.kafka import ensure_topics, kafka_security_kwargs, make_producer, topic_specs
from services.settings import CommonSettings, IngestSettings, NotifierSettings, ScorerSettings
from tests.helpers import FAST_GROUP_ENV, over_contacted, service_process, stored_snapshot, wait_until
from tests.ingest.helpers import ingest_settings_for, running_api

PASSWORD = "sasl-Pa55word-never-shown"
KEY_PASSWORD = "key-Pa55word-never-shown"


# ---------------------------------------------------------------- test certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    """Encrypted with KEY_PASSWORD."""
    other_ca: Path
    """A CA that signed nothing here: trusting only it must refuse the broker."""


def _openssl(workdir: Path, *args: str) -> None:
    subprocess.run(["openssl", *args], cwd=workdir, check=True, capture_output=True, timeout=60)


def _make_ca(workdir: Path, name: str) -> None:
    _openssl(workdir, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}")


def _make_leaf(workdir: Path, name: str, extensions: str, key_args: tuple[str, ...] = ("-nodes",)) -> None:
    (workdir / f"{name}.ext").write_text(extensions)
    _openssl(workdir, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", *key_args,
             "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
    _openssl(workdir, "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
             "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext")


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is needed to make test certificates")
    workdir = tmp_path_factory.mktemp("pki")
    _make_ca(workdir, "ca")
    _make_ca(workdir, "other-ca")
    _make_leaf(workdir, "broker", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    _make_leaf(workdir, "fatigue-client", "extendedKeyUsage=clientAuth\n",
               ("-passout", f"pass:{KEY_PASSWORD}"))
    return Pki(ca=workdir / "ca.pem", server_cert=workdir / "broker.pem", server_key=workdir / "broker.key",
               client_cert=workdir / "fatigue-client.pem", client_key=workdir / "fatigue-client.key",
               other_ca=workdir / "other-ca.pem")


def mtls_env(pki: Pki) -> dict[str, str]:
    return {
        "FATIGUE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "FATIGUE_KAFKA_SSL_CAFILE": str(pki.ca),
        "FATIGUE_KAFKA_SSL_CERTFILE": str(pki.client_cert),
        "FATIGUE_KAFKA_SSL_KEYFILE": str(pki.client_key),
        "FATIGUE_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD,
    }


def sasl_env(protocol: str = "SASL_SSL", mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
    return {
        "FATIGUE_KAFKA_SECURITY_PROTOCOL": protocol,
        "FATIGUE_KAFKA_SASL_MECHANISM": mechanism,
        "FATIGUE_KAFKA_SASL_USERNAME": "fatigue",
        "FATIGUE_KAFKA_SASL_PASSWORD": PASSWORD,
    }


# ---------------------------------------------------------------- settings


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    assert kafka_security_kwargs(CommonSettings.from_env({})) == {"security_protocol": "PLAINTEXT"}


def test_variables_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sasl_env("sasl_ssl", "scram-sha-256").items():  # case does not matter
        monkeypatch.setenv(name, value)
    settings = CommonSettings()
    assert (settings.kafka_security_protocol, settings.kafka_sasl_mechanism) == ("SASL_SSL", "SCRAM-SHA-256")
    assert settings.kafka_sasl_username == "fatigue"
    assert settings.kafka_sasl_password is not None and settings.kafka_sasl_password.get_secret_value() == PASSWORD


def test_empty_variables_count_as_unset() -> None:
    env = {"FATIGUE_KAFKA_SECURITY_PROTOCOL": "", "FATIGUE_KAFKA_SASL_USERNAME": "", "FATIGUE_KAFKA_SSL_CAFILE": ""}
    assert kafka_security_kwargs(CommonSettings.from_env(env)) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"FATIGUE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"},
         ["FATIGUE_KAFKA_SASL_MECHANISM", "FATIGUE_KAFKA_SASL_USERNAME", "FATIGUE_KAFKA_SASL_PASSWORD"]),
        ({**sasl_env("SASL_PLAINTEXT"), "FATIGUE_KAFKA_SASL_PASSWORD": ""}, ["needs FATIGUE_KAFKA_SASL_PASSWORD"]),
        ({"FATIGUE_KAFKA_SASL_USERNAME": "fatigue", "FATIGUE_KAFKA_SASL_PASSWORD": "x"},
         ["FATIGUE_KAFKA_SASL_USERNAME, FATIGUE_KAFKA_SASL_PASSWORD set", "PLAINTEXT does not use SASL"]),
        ({**sasl_env(), "FATIGUE_KAFKA_SECURITY_PROTOCOL": "SSL"}, ["SSL does not use SASL"]),
        ({**sasl_env(mechanism="GSSAPI")}, ["kafka_sasl_mechanism", "SCRAM-SHA-512"]),
        ({"FATIGUE_KAFKA_SECURITY_PROTOCOL": "TLS"}, ["kafka_security_protocol", "SASL_SSL"]),
        ({**sasl_env("SASL_PLAINTEXT"), "FATIGUE_KAFKA_SSL_CAFILE": "{ca}"},
         ["FATIGUE_KAFKA_SSL_CAFILE set", "SASL_PLAINTEXT does not use TLS"]),
        ({"FATIGUE_KAFKA_SECURITY_PROTOCOL": "SSL", "FATIGUE_KAFKA_SSL_CAFILE": "{missing}"},
         ["FATIGUE_KAFKA_SSL_CAFILE=", "no such file"]),
        ({"FATIGUE_KAFKA_SECURITY_PROTOCOL": "SSL", "FATIGUE_KAFKA_SSL_CERTFILE": "{cert}"},
         ["FATIGUE_KAFKA_SSL_CERTFILE and FATIGUE_KAFKA_SSL_KEYFILE go together"]),
        ({"FATIGUE_KAFKA_SECURITY_PROTOCOL": "SSL", "FATIGUE_KAFKA_SSL_KEYFILE": "{key}"},
         ["FATIGUE_KAFKA_SSL_CERTFILE and FATIGUE_KAFKA_SSL_KEYFILE go together"]),
        ({"FATIGUE_KAFKA_SECURITY_PROTOCOL": "SSL", "FATIGUE_KAFKA_SSL_KEY_PASSWORD": "x"},
         ["FATIGUE_KAFKA_SSL_KEY_PASSWORD set without FATIGUE_KAFKA_SSL_KEYFILE"]),
    ],
)
def test_incomplete_or_contradictory_settings_are_refused_naming_the_variables(
    env: dict[str, str], named: list[str], pki: Pki, tmp_path: Path
) -> None:
    paths = {"ca": pki.ca, "cert": pki.client_cert, "key": pki.client_key, "missing": tmp_path / "nope.pem"}
    env = {name: value.format(**paths) for name, value in env.items()}
    with pytest.raises(ValidationError) as caught:
        CommonSettings.from_env(env)
    for text in named:
        assert text in str(caught.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file_is_refused(pki: Pki, tmp_path: Path) -> None:
    unreadable = tmp_path / "ca.pem"
    unreadable.write_bytes(pki.ca.read_bytes())
    unreadable.chmod(0)
    env = {"FATIGUE_KAFKA_SECURITY_PROTOCOL": "SSL", "FATIGUE_KAFKA_SSL_CAFILE": str(unreadable)}
    with pytest.raises(ValidationError, match=r"FATIGUE_KAFKA_SSL_CAFILE=.*not readable"):
        CommonSettings.from_env(env)


def test_passwords_are_never_shown(pki: Pki) -> None:
    settings = NotifierSettings.from_env({**sasl_env(), **mtls_env(pki), "FATIGUE_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(faust_credentials(
        kafka_security_kwargs(settings)))]
    with pytest.raises(ValidationError) as caught:  # an error about another setting shows no input either
        NotifierSettings.from_env({**sasl_env(), "FATIGUE_KAFKA_SSL_KEY_PASSWORD": KEY_PASSWORD})
    shown.append(str(caught.value))
    for text in shown:
        assert PASSWORD not in text and KEY_PASSWORD not in text


# ---------------------------------------------------------------- aiokafka arguments


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_gives_credentials_and_a_verifying_tls_context(mechanism: str) -> None:
    kwargs = kafka_security_kwargs(CommonSettings.from_env(sasl_env("SASL_SSL", mechanism)))
    context = kwargs.pop("ssl_context")
    assert kwargs == {"security_protocol": "SASL_SSL", "sasl_mechanism": mechanism,
                      "sasl_plain_username": "fatigue", "sasl_plain_password": PASSWORD}
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


def test_sasl_plaintext_has_no_tls_context() -> None:
    kwargs = kafka_security_kwargs(CommonSettings.from_env(sasl_env("SASL_PLAINTEXT", "PLAIN")))
    assert kwargs["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in kwargs


def test_ssl_with_a_ca_file_trusts_that_ca_and_verifies_host_names(pki: Pki) -> None:
    kwargs = kafka_security_kwargs(CommonSettings.from_env(mtls_env(pki)))
    assert set(kwargs) == {"security_protocol", "ssl_context"} and kwargs["security_protocol"] == "SSL"
    context: ssl.SSLContext = kwargs["ssl_context"]
    assert [ca["subject"] for ca in context.get_ca_certs()] == [((("commonName", "ca"),),)]
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"FATIGUE_KAFKA_SSL_KEY_PASSWORD": "wrong"}, "FATIGUE_KAFKA_SSL_KEY_PASSWORD"),
        ({"FATIGUE_KAFKA_SSL_KEY_PASSWORD": ""}, "is encrypted: set FATIGUE_KAFKA_SSL_KEY_PASSWORD"),
        ({"FATIGUE_KAFKA_SSL_KEYFILE": "{server_key}"}, "not a matching PEM pair"),
        ({"FATIGUE_KAFKA_SSL_CAFILE": "{server_key}"}, "FATIGUE_KAFKA_SSL_CAFILE="),
    ],
)
def test_unloadable_tls_files_raise_config_error(change: dict[str, str], named: str, pki: Pki) -> None:
    env = {**mtls_env(pki), **{k: v.format(server_key=pki.server_key) for k, v in change.items()}}
    settings = CommonSettings.from_env(env)
    with pytest.raises(ConfigError, match=named) as caught:
        kafka_security_kwargs(settings)
    assert KEY_PASSWORD not in str(caught.value)


async def test_every_client_is_built_with_the_security_arguments(pki: Pki) -> None:
    settings = NotifierSettings.from_env({**sasl_env(), "FATIGUE_KAFKA_SSL_CAFILE": str(pki.ca)})
    producer = make_producer(settings, "test")
    consumer = make_consumer(settings)
    for client in (producer.client, consumer._client):
        assert client._security_protocol == "SASL_SSL"
        assert (client._sasl_mechanism, client._sasl_plain_username) == ("SCRAM-SHA-512", "fatigue")
        assert client._sasl_plain_password == PASSWORD
        assert client._ssl_context.get_ca_certs()[0]["subject"] == ((("commonName", "ca"),),)


@pytest.mark.parametrize(
    "env", [{}, sasl_env("SASL_PLAINTEXT", "PLAIN"), sasl_env("SASL_SSL")], ids=["plaintext", "sasl", "sasl-ssl"]
)
def test_faust_turns_its_credentials_back_into_the_same_arguments(env: dict[str, str]) -> None:
    kwargs = kafka_security_kwargs(CommonSettings.from_env(env))
    assert without_none(dict(credentials_to_aiokafka_auth(faust_credentials(kwargs)))) == kwargs


def test_faust_mutual_tls_keeps_the_context(pki: Pki) -> None:
    kwargs = kafka_security_kwargs(CommonSettings.from_env(mtls_env(pki)))
    assert credentials_to_aiokafka_auth(faust_credentials(kwargs)) == kwargs


def without_none(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Faust passes `ssl_context=None` for SASL_PLAINTEXT: aiokafka's default, the same connection."""
    return {name: value for name, value in kwargs.items() if value is not None}


def test_the_scorers_faust_app_connects_with_the_settings(pki: Pki, tmp_path: Path) -> None:
    env = {**sasl_env(), "FATIGUE_KAFKA_SSL_CAFILE": str(pki.ca), "REDIS_URL": "redis://127.0.0.1:9/0",
           "FATIGUE_DATA_DIR": str(tmp_path)}
    app = Scorer(ScorerSettings.from_env(env)).app
    auth = credentials_to_aiokafka_auth(app.conf.broker_credentials, app.conf.ssl_context)
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_plain_password"] == PASSWORD
    assert auth["ssl_context"].get_ca_certs()[0]["subject"] == ((("commonName", "ca"),),)
    assert app.producer._settings_auth()["sasl_mechanism"] == "SCRAM-SHA-512"  # type: ignore[attr-defined]


# ---------------------------------------------------------------- over mutual TLS, end to end


class TlsFront:
    """A TLS listener on loopback that requires a client certificate signed by the test CA and
    forwards the bytes to a plaintext Kafka listener: what a TLS-terminating load balancer does.
    Runs its own event loop in a thread, so it keeps serving while a test blocks."""

    def __init__(self, pki: Pki, upstream_port: int) -> None:
        self.port = free_port()
        self.client_names: list[str | None] = []
        """The client certificate's common name of every connection that completed the handshake."""
        self._upstream_port = upstream_port
        self._context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki.ca)
        self._context.load_cert_chain(pki.server_cert, pki.server_key)
        self._context.verify_mode = ssl.CERT_REQUIRED
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(lambda loop, context: None)  # refused handshakes are expected
        self._thread = threading.Thread(target=self._loop.run_forever, name="tls-front", daemon=True)

    def start(self) -> None:
        self._thread.start()
        serve = asyncio.start_server(self._forward, LOOPBACK, self.port, ssl=self._context)
        self._server = asyncio.run_coroutine_threadsafe(serve, self._loop).result(timeout=10)

    def stop(self) -> None:
        async def close() -> None:
            self._server.close()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _forward(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        subject = dict(item[0] for item in writer.get_extra_info("peercert").get("subject", ()))
        self.client_names.append(subject.get("commonName"))
        upstream_reader, upstream_writer = await asyncio.open_connection(LOOPBACK, self._upstream_port)
        await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer), return_exceptions=True)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    finally:
        writer.close()


@pytest.fixture(scope="module")
def tls_front(pki: Pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsFront]:
    """A Tansu of its own whose advertised listener is the TLS front, so every connection goes through it."""
    broker_port = free_port()
    front = TlsFront(pki, broker_port)
    log_path = tmp_path_factory.mktemp("tansu-tls") / "kafka.log"
    args = [str(tansu_binary()), "broker", "--listener-url", f"tcp://{LOOPBACK}:{broker_port}",
            "--advertised-listener-url", f"tcp://{LOOPBACK}:{front.port}"]
    with log_path.open("wb") as log:
        proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        wait_for_port(broker_port, 20, proc)
        front.start()
        yield front
    finally:
        with contextlib.suppress(Exception):
            front.stop()
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@pytest.fixture
def tls_env(tls_front: TlsFront, pki: Pki, stack: EmbeddedStack, unique: str, tmp_path: Path) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP_SERVERS": f"{LOOPBACK}:{tls_front.port}",
        "REDIS_URL": stack.redis_url,
        "FATIGUE_TOPIC_PREFIX": f"t{unique}.",
        "FATIGUE_REDIS_PREFIX": f"t{unique}:",
        "FATIGUE_PARTITIONS": "3",
        "FATIGUE_KAFKA_REQUEST_TIMEOUT_S": "5",
        **FAST_GROUP_ENV,
        **mtls_env(pki),
        "FATIGUE_SCORER_APP_ID": f"scorer-{unique}",
        "FATIGUE_NOTIFIER_GROUP_ID": f"notifier-{unique}",
        "FATIGUE_WEB_PORT": "0",
        "FATIGUE_DATA_DIR": str(tmp_path / "scorer"),
    }


@pytest.mark.integration
@pytest.mark.parametrize("drop", [("FATIGUE_KAFKA_SSL_CERTFILE", "FATIGUE_KAFKA_SSL_KEYFILE",
                                   "FATIGUE_KAFKA_SSL_KEY_PASSWORD"), ("FATIGUE_KAFKA_SSL_CAFILE",)],
                         ids=["no-client-certificate", "broker-not-trusted"])
async def test_a_broker_that_refuses_the_handshake_is_unavailable(
    tls_env: dict[str, str], drop: tuple[str, ...], pki: Pki
) -> None:
    env = {k: v for k, v in tls_env.items() if k not in drop}
    if "FATIGUE_KAFKA_SSL_CAFILE" in drop:
        env["FATIGUE_KAFKA_SSL_CAFILE"] = str(pki.other_ca)
    with pytest.raises(BrokerUnavailable):
        await ensure_topics(CommonSettings.from_env(env))


@pytest.mark.integration
async def test_api_scorer_and_notifier_work_over_mutual_tls(
    tls_env: dict[str, str], tls_front: TlsFront, redis_client: Redis, tmp_path: Path
) -> None:
    settings = CommonSettings.from_env(tls_env)
    assert len(await ensure_topics(settings)) == len(topic_specs(settings))
    async with running_api(ingest_settings_for(IngestSettings.from_env(tls_env))) as api:
        response = await api.post("/v1/events", json=over_contacted("cust-tls"))
        assert response.status_code == 202, response.text
    with service_process("scorer", tls_env, tmp_path):
        actions = await _read_actions(NotifierSettings.from_env(tls_env), expected=1)
    assert [a["type"] for a in actions] == ["fatigue.throttle"]
    snapshot = await stored_snapshot(redis_client, settings, "cust-tls")
    assert snapshot is not None and snapshot["status"] == "throttled"
    assert set(tls_front.client_names) == {"fatigue-client"}  # every connection: TLS with the client certificate


async def _read_actions(settings: NotifierSettings, expected: int) -> list[dict[str, Any]]:
    consumer = make_consumer(settings, session_timeout_ms=6000, heartbeat_interval_ms=1000, rebalance_timeout_ms=5000)
    found: list[dict[str, Any]] = []
    async with _started(consumer):
        async def enough() -> list[dict[str, Any]] | None:
            batch = await consumer.getmany(timeout_ms=500)
            found.extend(json.loads(r.value) for records in batch.values() for r in records)
            return found if len(found) >= expected else None

        return await wait_until(enough, 60, f"{expected} actions over TLS")


@contextlib.asynccontextmanager
async def _started(consumer: AIOKafkaConsumer) -> AsyncIterator[AIOKafkaConsumer]:
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()
