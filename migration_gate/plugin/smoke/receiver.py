"""The webhook receiver the smoke tests run on loopback: it records every POST."""

from __future__ import annotations

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from migration_gate.plugin.smoke.deployment import SmokeUnavailable
from migration_gate.reference.api import SHUTDOWN_POLL_SECONDS


@dataclass(frozen=True)
class Delivery:
    path: str
    headers: dict[str, str]
    body: bytes


class WebhookReceiver:
    """A loopback HTTP server that records every POST; paths under /fail answer 503."""

    def __init__(self, port: int = 0, public_url: str | None = None) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # no delayed-ACK wait between a reply's header and its body

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {key.lower(): value for key, value in self.headers.items()}
                path = self.path.removeprefix(receiver.prefix)  # relative to the public URL
                with receiver._lock:
                    receiver._deliveries.append(Delivery(path, headers, body))
                self.send_response(503 if path.startswith("/fail") else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._lock = threading.Lock()
        self._deliveries: list[Delivery] = []
        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            args=(SHUTDOWN_POLL_SECONDS,),  # the default half second is added to every window
            name="webhook-receiver",
            daemon=True,
        )
        self.base_url = (public_url or f"http://127.0.0.1:{self._server.server_port}").rstrip("/")
        self.prefix = urlsplit(self.base_url).path

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def url(self, path: str) -> str:
        return self.base_url + path

    def deliveries_to(self, path: str) -> list[Delivery]:
        with self._lock:
            return [d for d in self._deliveries if d.path == path]


def open_receiver(public_url: str | None) -> WebhookReceiver:
    """A receiver on a free loopback port; or, for a deployment that reaches it at ``public_url``
    (the same host, or a tunnel), on 127.0.0.1 at that URL's port."""
    if public_url is None:
        return WebhookReceiver()
    port = urlsplit(public_url).port
    if port is None:
        raise SmokeUnavailable(
            f"--webhook-receiver-url {public_url} names no port: the test's receiver listens on "
            "127.0.0.1 at that URL's port, so give one explicitly"
        )
    return WebhookReceiver(port, public_url)
