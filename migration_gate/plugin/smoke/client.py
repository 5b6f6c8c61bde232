"""Talking to the deployment: requests as an acting user, every response held to the contract."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests

from migration_gate.plugin.contract import ApiContract

NO_SUCH_ID = 2**63 - 1  # a valid bigint no row will ever have in a smoke run
REQUEST_TIMEOUT = 15.0

T = TypeVar("T")

_NO_JSON = object()


class ApiClient:
    """requests against the deployment: X-User-Id as the acting user, the bearer token if any.

    Every response is checked against the contract before the caller sees it.
    """

    def __init__(self, base_url: str, contract: ApiContract, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.contract = contract
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def request(
        self,
        method: str,
        path: str,
        *,
        user: int | str | None,
        json_body: Any = _NO_JSON,
        raw: bytes | None = None,
    ) -> requests.Response:
        __tracebackhide__ = True  # a contract violation points at the test's request
        headers = {"Content-Type": "application/json"}
        if user is not None:
            headers["X-User-Id"] = str(user)
        data = raw if json_body is _NO_JSON else json.dumps(json_body).encode("utf-8")
        response = self.http.request(
            method, self.base_url + path, data=data, headers=headers, timeout=REQUEST_TIMEOUT
        )
        self.contract.check(response, self.base_url)
        return response

    def close(self) -> None:
        self.http.close()


def expect(response: requests.Response, status: int) -> Any:
    """The JSON body of a response that must have ``status``; else a failure quoting the answer."""
    request = response.request
    assert response.status_code == status, (
        f"{request.method} {urlsplit(request.url or '').path} answered {response.status_code},"
        f" expected {status}: {response.text[:1000]}"
    )
    try:
        return response.json()
    except ValueError:
        raise AssertionError(
            f"{request.method} {request.url} answered {status} with a body that is not JSON: "
            f"{response.text[:300]!r}"
        ) from None


def wait_until(probe: Callable[[], T], done: Callable[[T], bool], what: str, timeout: float) -> T:
    """Poll ``probe`` until ``done`` (fast at first, then every 50 ms), or fail saying what it saw."""
    deadline = time.monotonic() + timeout
    pause = 0.005
    while True:
        value = probe()
        if done(value):
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{what}: not reached within {timeout:g} s; last seen: {value!r}")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
