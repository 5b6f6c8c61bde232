"""HTTP/1.1 for the reference API: requests in, ``{"error": ...}`` or the reply out, every method routed."""

from __future__ import annotations

import json
import logging
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import psycopg
from psycopg import errors as pg_errors

from migration_gate.core import dsn
from migration_gate.core.contract import APP_ROLE
from migration_gate.core.errors import GateError
from migration_gate.core.text import first_line
from migration_gate.reference.validation import MAX_BODY_BYTES, ApiError, Reply, bad_request

log = logging.getLogger("migration_gate.api")


class Service(Protocol):
    """What answers a request: the reference API."""

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes | None) -> Reply: ...


def database_fault(exc: psycopg.Error) -> ApiError:
    """A psycopg error that escaped validation, as the answer it deserves."""
    message = first_line(exc)
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        # The application's role lacks a grant: the server is misconfigured, and the
        # database's own words are what an operator needs to see.
        return ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"database refused {APP_ROLE}: {message}")
    if isinstance(exc, psycopg.DataError):  # a value PostgreSQL cannot store: still bad input
        return bad_request(f"the database rejected a value: {message}")
    if isinstance(exc, psycopg.IntegrityError):
        return ApiError(HTTPStatus.CONFLICT, f"conflict: {message}")
    if isinstance(exc, psycopg.OperationalError):
        return ApiError(HTTPStatus.SERVICE_UNAVAILABLE, f"database unavailable: {message}")
    return ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, f"database error: {message}")


class HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[Handler], api: Service) -> None:
        self.api = api
        super().__init__(address, handler)


class Handler(BaseHTTPRequestHandler):
    server: HttpServer
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle's algorithm the body waits for the
    # client's delayed ACK of the headers, 40 ms a response on a kept-alive connection.
    disable_nagle_algorithm = True

    def _dispatch(self) -> None:
        headers: dict[str, str] = {}
        try:
            raw = self._read_body()
            status, reply = self.server.api.handle(
                self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, raw
            )
        except ApiError as exc:
            status, reply, headers = exc.status, {"error": exc.message}, exc.headers
        except psycopg.Error as exc:
            fault = database_fault(exc)
            status, reply = fault.status, {"error": dsn.redact(fault.message)}
        except GateError as exc:  # the database cannot be reached (dsn.connect's one line)
            status, reply = HTTPStatus.SERVICE_UNAVAILABLE, {"error": str(exc)}
        except Exception as exc:
            log.exception("%s %s", self.command, self.path)
            status, reply = HTTPStatus.INTERNAL_SERVER_ERROR, {"error": f"internal error: {first_line(exc)}"}
        self._send(status, reply, headers)

    def __getattr__(self, name: str) -> Any:
        # http.server answers 501 to a method without a do_<METHOD> (TRACE, QUERY, anything):
        # every method is routed, so that one the contract does not declare is a 405 with Allow.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise ApiError(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
        length_text = self.headers.get("Content-Length")
        if length_text is None:
            return None
        if not length_text.strip().isdigit():
            self.close_connection = True
            raise bad_request("Content-Length is not a number")
        length = int(length_text)
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY_BYTES} bytes")
        return self.rfile.read(length)

    def _send(self, status: HTTPStatus, reply: dict[str, Any], headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(reply, default=json_default).encode("utf-8")
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a malformed request line, headers too long) in JSON too."""
        self.close_connection = True
        try:
            status = HTTPStatus(code)
        except ValueError:
            status = HTTPStatus.BAD_REQUEST
        self._send(status, {"error": message or status.phrase})

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)


def json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"cannot encode {type(value).__name__}")
