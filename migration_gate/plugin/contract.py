"""Every answer the smoke tests get, held to the contract (``smoke/openapi.yaml``) by openapi-core.

A response that drifts from the contract (a status it does not declare for the operation,
another content type, a required field missing, a field of the wrong type or outside its
enum) fails the test that received it, naming the operation and the field, before the
test looks at the fields it cares about: in the gate and against a deployment alike. A
request outside the contract (a route or a method it does not declare, sent on purpose)
must still be answered ``{"error": ...}``, and a 405 must name the declared methods in
``Allow``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import yaml

if TYPE_CHECKING:
    from openapi_core.exceptions import OpenAPIError

# openapi-core is imported where a contract is first read, not with this module: a gate
# session without smoke tests (a nightly run, a usage error) never pays its 0.4 s.

# Responses are matched on their path below the deployment's base URL, whatever its host.
_CONTRACT_HOST = "http://contract.invalid"
_METHODS = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
BODY_EXCERPT = 300


class ContractViolation(AssertionError):
    """A response the contract does not allow: the operation, the status and what is wrong, field by field."""


@dataclass(frozen=True)
class Operation:
    """One operation of the contract: its ``operationId``, method and path template."""

    operation_id: str
    method: str
    template: str

    def __str__(self) -> str:
        return f"{self.operation_id} ({self.method} {self.template})"


@dataclass(frozen=True)
class _PathItem:
    template: str
    pattern: re.Pattern[str]
    operations: dict[str, Operation]  # by upper-case method


class ApiContract:
    """``smoke/openapi.yaml`` (or another contract file), ready to judge responses."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise FileNotFoundError(
                f"no API contract at {path}: the smoke tests check every response against the "
                "openapi.yaml beside them"
            )
        self.path = path
        self.label = f"{path.parent.name}/{path.name}"
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        raw["servers"] = [{"url": _CONTRACT_HOST}]
        self._raw = raw
        from openapi_core import OpenAPI

        self._openapi = OpenAPI.from_dict(raw)
        self._paths = [
            _PathItem(
                template,
                re.compile("^" + re.sub(r"\\\{\w+\\\}", "[^/]+", re.escape(template)) + "$"),
                {
                    method.upper(): Operation(item[method]["operationId"], method.upper(), template)
                    for method in _METHODS
                    if method in item
                },
            )
            for template, item in raw["paths"].items()
        ]

    def operation(self, method: str, path: str) -> Operation | None:
        """The operation ``method path`` calls (``path`` below the base URL), or None outside the contract."""
        for item in self._paths:
            if item.pattern.match(path):
                return item.operations.get(method.upper())
        return None

    def declared_statuses(self, operation: Operation) -> list[str]:
        return list(self._raw["paths"][operation.template][operation.method.lower()]["responses"])

    def declared_methods(self, path: str) -> list[str] | None:
        for item in self._paths:
            if item.pattern.match(path):
                return sorted(item.operations)
        return None

    def check(self, response: requests.Response, base_url: str) -> None:
        """Raise ContractViolation unless ``response`` is one the contract allows for its request."""
        __tracebackhide__ = True  # the failure points at the test's request, not at this check
        request = response.request
        method = str(request.method).upper()
        parts = urlsplit(str(request.url))
        path = parts.path.removeprefix(urlsplit(base_url).path.rstrip("/")) or "/"
        operation = self.operation(method, path)
        if operation is None:
            self._check_outside_the_contract(response, method, path)
            return
        from openapi_core.contrib.requests import RequestsOpenAPIRequest, RequestsOpenAPIResponse
        from openapi_core.exceptions import OpenAPIError
        from openapi_core.templating.responses.exceptions import ResponseNotFound

        called = request.copy()  # as sent, below the contract's own server URL
        called.url = _CONTRACT_HOST + path + (f"?{parts.query}" if parts.query else "")
        try:
            self._openapi.validate_response(RequestsOpenAPIRequest(called), RequestsOpenAPIResponse(response))
        except ResponseNotFound:
            declared = ", ".join(self.declared_statuses(operation))
            raise ContractViolation(
                f"{operation} answered {response.status_code}, a status {self.label} does not declare for it "
                f"({declared}): {_excerpt(response)}"
            ) from None
        except OpenAPIError as exc:
            raise ContractViolation(
                f"{operation} answered {response.status_code}, which {self.label} does not allow: "
                f"{'; '.join(_problems(exc))}; it answered {_excerpt(response)}"
            ) from None

    def _check_outside_the_contract(self, response: requests.Response, method: str, path: str) -> None:
        """A route or method the contract does not declare: still an error in JSON, and a 405 says what is allowed."""
        __tracebackhide__ = True
        where = f"{method} {path} (outside {self.label})"
        try:
            reply = response.json()
        except ValueError:
            reply = None
        has_error = isinstance(reply, dict) and isinstance(reply.get("error"), str)
        if not has_error and method != "HEAD":  # an answer to HEAD has no body
            raise ContractViolation(
                f'{where} answered {response.status_code} without {{"error": "..."}}: {_excerpt(response)}'
            )
        declared = self.declared_methods(path)
        if response.status_code == 405 and declared is not None:
            allow = sorted(
                m.strip().upper() for m in response.headers.get("Allow", "").split(",") if m.strip()
            )
            if allow != declared:
                raise ContractViolation(
                    f"{where} answered 405 with Allow: {response.headers.get('Allow')!r}; "
                    f"the methods {self.label} declares there are {', '.join(declared)}"
                )


def api_contract(path: Path) -> ApiContract:
    """One parsed contract per file for the whole session (openapi-core takes a while to build one)."""
    return _parsed(path.resolve())


@cache
def _parsed(path: Path) -> ApiContract:
    return ApiContract(path)


def _problems(exc: OpenAPIError) -> Iterator[str]:
    """Each field that is wrong, as ``field: what``; or openapi-core's own sentence (a status, a content type)."""
    from openapi_core.validation.schemas.exceptions import InvalidSchemaValue

    cause = exc.__cause__
    if isinstance(cause, InvalidSchemaValue) and cause.schema_errors:
        for error in cause.schema_errors:
            where = getattr(error, "absolute_path", ())  # a jsonschema ValidationError's
            yield f"{_field(list(where))}: {getattr(error, 'message', error)}"
    elif cause is not None:
        yield str(cause)
    else:
        yield str(exc)


def _field(path: list[Any]) -> str:
    """``activities[0].created_at``; the body itself when the error is about the whole object."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f".{part}"
    return text.lstrip(".") or "the body"


def _excerpt(response: requests.Response) -> str:
    try:
        return json.dumps(response.json(), ensure_ascii=False)[:BODY_EXCERPT]
    except ValueError:
        return repr(response.text[:BODY_EXCERPT])
