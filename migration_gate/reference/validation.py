"""What the reference API accepts: the rules of ``smoke/openapi.yaml``, and the answer to anything else.

A request its schemas accept is served; anything else is a 400 (or 404 for an id that
names nothing) with one line of ``{"error": ...}`` saying what is wrong, never a 5xx.
"""

from __future__ import annotations

import json
import re
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs

MAX_BODY_BYTES = 1 << 20
BIGINT_MAX = 2**63 - 1
# The JSON numbers RFC 8259 calls interoperable: finite, within a double's range.
NUMBER_MAX = 1.7976931348623157e308
DEFAULT_ACTIVITY_LIMIT = 50
MAX_ACTIVITY_LIMIT = 500


# The rules of smoke/openapi.yaml, spelled the same there (ECMA-262) and here (Python's re, with
# fullmatch: Python's $ also matches before a final newline). A test keeps the two identical.
# Not blank: one character that str.isspace() does not call whitespace; \s differs between dialects.
NON_BLANK_TEXT = r"^[^\x00]*[^\x00\t\n\x0b\x0c\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000][^\x00]*$"
# http(s); a DNS name (labels of at most 63 characters), or an IPv4 address, or a bracketed
# IPv6 literal as RFC 3986 §3.2.2 spells it (IPv4 tail included, no zone): `[c]` or `[1:2]`
# is no address, and Python's urlsplit, urllib3 and requests all refuse to parse one; a
# port 0-65535; then RFC 3986's path, query and fragment characters (ASCII, no space, no
# backslash). Every URL it admits is one the delivery worker's client can parse
# (tests/test_reference_api.py proves that with Hypothesis).
_H16 = "[0-9A-Fa-f]{1,4}"
_DEC_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_LS32 = rf"(?:{_H16}:{_H16}|{_DEC_OCTET}(?:\.{_DEC_OCTET}){{3}})"
_IPV6 = "|".join(
    [
        rf"(?:{_H16}:){{6}}{_LS32}",
        rf"::(?:{_H16}:){{5}}{_LS32}",
        rf"(?:{_H16})?::(?:{_H16}:){{4}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,1}}{_H16})?::(?:{_H16}:){{3}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,2}}{_H16})?::(?:{_H16}:){{2}}{_LS32}",
        rf"(?:(?:{_H16}:){{0,3}}{_H16})?::{_H16}:{_LS32}",
        rf"(?:(?:{_H16}:){{0,4}}{_H16})?::{_LS32}",
        rf"(?:(?:{_H16}:){{0,5}}{_H16})?::{_H16}",
        rf"(?:(?:{_H16}:){{0,6}}{_H16})?::",
    ]
)
_LABEL = "[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_PORT = "(?:6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
HTTP_URL = (
    rf"^https?://(?:{_LABEL}(?:\.{_LABEL})*|\[(?:{_IPV6})\])(?::{_PORT})?"
    r"(?:[/?#][A-Za-z0-9._~!$&'()*+,;=:@/?#%-]*)?$"
)
_NON_BLANK_TEXT = re.compile(NON_BLANK_TEXT)
_HTTP_URL = re.compile(HTTP_URL)


class ApiError(Exception):
    """An answer other than success: its status, the one line of ``{"error": ...}``, any headers."""

    def __init__(self, status: HTTPStatus, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def bad_request(message: str) -> ApiError:
    return ApiError(HTTPStatus.BAD_REQUEST, message)


def not_found(message: str) -> ApiError:
    return ApiError(HTTPStatus.NOT_FOUND, message)


Reply = tuple[HTTPStatus, dict[str, Any]]


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_object(raw: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 saying what is wrong with it."""
    try:
        value = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except UnicodeDecodeError:
        raise bad_request("the body is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"malformed JSON: {str(exc)[:200]}") from None
    if not isinstance(value, dict):
        raise bad_request(f"the body must be a JSON object, not {type(value).__name__}")
    _check_storable(value)
    return value


def _check_storable(value: Any) -> None:
    """PostgreSQL text and jsonb hold neither NUL nor unpaired surrogates: refuse them up front."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            if "\x00" in item:
                raise bad_request("strings may not contain the NUL character")
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                raise bad_request("strings may not contain unpaired surrogates") from None
        elif isinstance(item, int | float) and not _is_interoperable_number(item):
            raise bad_request("numbers must be finite and within the range of a double")


def _istext(value: object) -> bool:
    return isinstance(value, str) and _NON_BLANK_TEXT.fullmatch(value) is not None


def _is_interoperable_number(number: float) -> bool:
    # Compared, never converted: an integer too big for a float would overflow math.isfinite.
    return -NUMBER_MAX <= number <= NUMBER_MAX  # False for NaN and the infinities too


def text(body: dict[str, Any], name: str) -> str:
    value = body[name]
    if not _istext(value):
        raise bad_request(f"{name!r} must be a non-empty string")
    return value


def text_list(body: dict[str, Any], name: str) -> list[str]:
    value = body[name]
    if not isinstance(value, list) or not value:
        raise bad_request(f"{name!r} must be a non-empty array of strings")
    if not all(_istext(item) for item in value):
        raise bad_request(f"{name!r} must hold non-empty strings only")
    return value


def http_url(body: dict[str, Any], name: str) -> str:
    value = body[name]
    if not isinstance(value, str) or not _HTTP_URL.fullmatch(value):
        raise bad_request(f"{name!r} must be an http(s) URL")
    return value


def json_object(body: dict[str, Any], name: str) -> dict[str, Any]:
    value = body[name]
    if not isinstance(value, dict):
        raise bad_request(f"{name!r} must be a JSON object")
    return value


def fields(body: dict[str, Any], required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Every required field present, nothing unknown (a typo must not be silently ignored)."""
    missing = [name for name in required if name not in body]
    if missing:
        raise bad_request(f"missing field(s): {', '.join(missing)}")
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise bad_request(f"unknown field(s): {', '.join(unknown)}")


def parse_id(text: str, what: str) -> int:
    """A bigint id from the path; anything else names nothing there is (404, never 500)."""
    if text.isascii() and text.isdigit() and 0 < int(text) <= BIGINT_MAX:
        return int(text)
    raise not_found(f"no {what} {text!r}")


def parse_limit(query: str) -> int:
    values = parse_qs(query, keep_blank_values=True).get("limit", [])
    if not values:
        return DEFAULT_ACTIVITY_LIMIT
    if len(values) > 1:
        raise bad_request("'limit' given more than once")
    text = values[0]
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MAX_ACTIVITY_LIMIT:
        raise bad_request(f"'limit' must be an integer from 1 to {MAX_ACTIVITY_LIMIT}")
    return int(text)
