"""The image's HEALTHCHECK (fatigue/healthcheck.py): healthy when the service in the container answers /healthz."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from fatigue.embedded import free_port
from fatigue.healthcheck import healthy


class Answer(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def serving() -> Iterator[tuple[ThreadingHTTPServer, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server, server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_notifier_container_is_healthy_on_its_metrics_port(serving: tuple[ThreadingHTTPServer, int]) -> None:
    _, port = serving
    closed = str(free_port())
    assert healthy({"FATIGUE_PORT": closed, "FATIGUE_WEB_PORT": closed, "FATIGUE_METRICS_PORT": str(port)})


def test_unhealthy_when_nothing_answers_200(serving: tuple[ThreadingHTTPServer, int]) -> None:
    server, port = serving
    closed = str(free_port())
    assert not healthy({"FATIGUE_PORT": closed, "FATIGUE_WEB_PORT": closed, "FATIGUE_METRICS_PORT": "0"})
    server.RequestHandlerClass.status = 503  # type: ignore[attr-defined]
    try:
        assert not healthy({"FATIGUE_PORT": str(port), "FATIGUE_WEB_PORT": closed})
    finally:
        server.RequestHandlerClass.status = 200  # type: ignore[attr-defined]
