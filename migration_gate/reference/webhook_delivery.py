"""The reference API's webhook worker: POST each fired event, signed, retried with backoff.

An event goes pending → processing (one attempt in flight) → delivered, or back to
pending to wait for its retry, or failed once the attempts are used up. The worker only
delivers what this service fired since it started (an in-memory schedule, woken by the
API): the legacy queue a migrated database holds is not this reference's to replay.
"""

from __future__ import annotations

import hashlib
import heapq
import hmac
import json
import logging
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import psycopg
import requests

from migration_gate.core.retry import Backoff

log = logging.getLogger("migration_gate.api.delivery")

SIGNATURE_HEADER = "X-Fluxolab-Signature"


@dataclass(frozen=True)
class DeliveryPolicy(Backoff):
    """How hard the worker tries: attempts in all, the first retry's delay (doubling), the POST's timeout."""

    timeout_seconds: float = 5.0


# The smoke tests' policy (the gate's and the playbook's): a failing delivery settles in well under a second.
FAST_RETRIES = DeliveryPolicy(attempts=3, backoff_seconds=0.02, timeout_seconds=5.0)


def sign(body: bytes, secret: str) -> str:
    """``sha256=<hex HMAC-SHA256 of body keyed with secret>``: the value of the signature header."""
    return "sha256=" + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_is_valid(body: bytes, secret: str, header: str | None) -> bool:
    return header is not None and hmac.compare_digest(sign(body, secret), header)


def encode_body(body: Any) -> bytes:
    """The bytes POSTed for an event body: compact JSON, UTF-8."""
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


_CLAIM = """
UPDATE webhook_events e
SET status = 'processing', attempts = e.attempts + 1
FROM webhook_registrations r
WHERE e.id = %s AND e.status = 'pending' AND r.id = e.registration_id
RETURNING e.attempts, e.event_type, e.body, r.target_url, r.secret
"""


class DeliveryWorker:
    """One thread delivering the events the API hands it, each when it is due."""

    def __init__(
        self, connect: Callable[[], AbstractContextManager[psycopg.Connection]], policy: DeliveryPolicy
    ) -> None:
        self._connect = connect
        self.policy = policy
        self._due: list[tuple[float, int]] = []  # (monotonic time due, event id), a heap
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="webhook-delivery", daemon=True)
        self._http = requests.Session()
        self.last_errors: dict[int, str] = {}  # event id → why its last attempt did not deliver

    def start(self) -> DeliveryWorker:
        self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the attempt in flight; events still waiting stay ``pending`` in the database."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._http.close()

    def enqueue(self, event_id: int, delay: float = 0.0) -> None:
        with self._wake:
            heapq.heappush(self._due, (time.monotonic() + delay, event_id))
            self._wake.notify_all()

    def _next_due(self) -> int | None:
        with self._wake:
            while not self._stopping:
                if self._due:
                    due, event_id = self._due[0]
                    wait = due - time.monotonic()
                    if wait <= 0:
                        heapq.heappop(self._due)
                        return event_id
                    self._wake.wait(wait)
                else:
                    self._wake.wait()
            return None

    def _run(self) -> None:
        while (event_id := self._next_due()) is not None:
            try:
                self._attempt(event_id)
            except psycopg.Error as exc:
                # The database refused the worker (a revoked grant, a lost connection): the
                # event stays where it was, and GET .../webhook-events/{id} shows why.
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                self.last_errors[event_id] = f"database: {message}"
                log.error("event %s: %s", event_id, message)
            except Exception as exc:  # the worker must outlive any one event
                self.last_errors[event_id] = f"{type(exc).__name__}: {exc}"
                log.exception("event %s: delivery crashed", event_id)

    def _attempt(self, event_id: int) -> None:
        with self._connect() as conn:
            claimed = conn.execute(_CLAIM, (event_id,)).fetchone()
            if claimed is None:  # delivered, failed or gone meanwhile
                return
            attempts, event_type, body, target_url, secret = claimed
            payload = encode_body(body)
            problem = self._post(event_id, event_type, payload, target_url, secret)
            if problem is None:
                conn.execute(
                    "UPDATE webhook_events SET status = 'delivered', processed_at = now() WHERE id = %s",
                    (event_id,),
                )
                self.last_errors.pop(event_id, None)
                log.info("event %s delivered to %s (attempt %s)", event_id, target_url, attempts)
                return
            self.last_errors[event_id] = problem
            if attempts >= self.policy.attempts:
                conn.execute(
                    "UPDATE webhook_events SET status = 'failed', processed_at = now() WHERE id = %s",
                    (event_id,),
                )
                log.warning("event %s failed after %s attempts: %s", event_id, attempts, problem)
                return
            conn.execute("UPDATE webhook_events SET status = 'pending' WHERE id = %s", (event_id,))
            delay = self.policy.delay_after(attempts)
            log.info("event %s attempt %s: %s; retrying in %.3g s", event_id, attempts, problem, delay)
            self.enqueue(event_id, delay)

    def _post(
        self, event_id: int, event_type: str, payload: bytes, target_url: str, secret: str
    ) -> str | None:
        """None when the receiver answered 2xx, else why not."""
        headers = {
            "Content-Type": "application/json",
            "X-Fluxolab-Event": event_type,
            "X-Fluxolab-Event-Id": str(event_id),
            SIGNATURE_HEADER: sign(payload, secret),
        }
        try:
            response = self._http.post(
                target_url,
                data=payload,
                headers=headers,
                timeout=self.policy.timeout_seconds,
                allow_redirects=False,
            )
        except (requests.RequestException, ValueError) as exc:
            # ValueError: a header http.client cannot send (an event type outside Latin-1, for
            # one) fails this attempt like a refused connection, never leaving the event claimed.
            return f"{type(exc).__name__}: {exc}"
        if 200 <= response.status_code < 300:
            return None
        return f"receiver answered {response.status_code}"
