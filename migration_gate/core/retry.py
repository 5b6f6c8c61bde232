"""Trying again after a failure, each wait twice the one before: a lock timeout, a webhook delivery."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backoff:
    """Attempts in all, and the wait after the first failed one (doubling after each next)."""

    attempts: int = 5
    backoff_seconds: float = 1.0

    def delay_after(self, attempt: int) -> float:
        """The wait after failed attempt number ``attempt`` (from 1)."""
        return float(self.backoff_seconds * 2 ** (attempt - 1))
