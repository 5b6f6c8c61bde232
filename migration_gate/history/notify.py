"""Telling a chat once per change: a check that began to fail, or one that passes again.

The message is Slack's incoming-webhook body, ``{"text": …}``, which Mattermost, Rocket.Chat,
Discord's Slack-compatible endpoint and Teams' workflows read too. Each change has a key
(what changed, which check, in which run); once a post is answered 2xx the key is kept in
the history, so asking again posts nothing and a failed post is tried again next time
(at least once: a crash between the answer and the write would post it twice).

The URL carries the channel's token: it is never printed, and a failed post says only
why (the status, or the network's reason), as a warning that changes nothing else.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from migration_gate.core.errors import UsageError
from migration_gate.history.record import now
from migration_gate.history.report import CheckTrend, Report
from migration_gate.history.store import History

POST_TIMEOUT_SECONDS = 10.0


@dataclass(frozen=True)
class Change:
    key: str
    text: str


def check_url(url: str) -> None:
    """Refuse what cannot be posted to, without repeating the URL (it carries a token)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(
            "--notify-url is not an http:// or https:// URL (the value is not shown: it holds a token)"
        )


def changes(report: Report) -> list[Change]:
    """The latest run's changes: each check that began to fail in it, each that passes again."""
    latest = report.latest
    where = latest.target.described
    found = []
    for check in report.new:
        now_ = check.now
        count = f": {now_.count} offending" if now_ is not None and now_.count is not None else ""
        was = f"; it passed in run {check.before_run}" if check.before_run is not None else ""
        found.append(
            Change(
                _key("new", check, latest.run_id),
                f":rotating_light: migration-gate: NEW failure on {where}: {check.label}{count}, "
                f"{latest.label()}{was}",
            )
        )
    for check in report.resolved:
        since = f", failing since run {check.first_failed.number}" if check.first_failed else ""
        found.append(
            Change(
                _key("resolved", check, latest.run_id),
                f":white_check_mark: migration-gate: resolved on {where}: {check.label} passes, "
                f"{latest.label()}{since}",
            )
        )
    return found


def _key(change: str, check: CheckTrend, run_id: str) -> str:
    return f"{change}|{check.kind}|{check.name}|{check.checkpoint}|{run_id}"


def post(url: str, text: str, timeout: float = POST_TIMEOUT_SECONDS) -> str | None:
    """POST ``{"text": text}``; None when answered 2xx, else why not (never the URL)."""
    request = urllib.request.Request(
        url,
        data=json.dumps({"text": text}).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"the receiver answered HTTP {exc.code}"
    except urllib.error.URLError as exc:
        return f"the receiver cannot be reached ({exc.reason})"
    except (TimeoutError, OSError) as exc:
        return f"the receiver cannot be reached ({type(exc).__name__}: {exc.strerror or exc})"
    return None if 200 <= status < 300 else f"the receiver answered HTTP {status}"


def notify(history: History, report: Report, url: str, warn: Callable[[str], None]) -> list[Change]:
    """Post each change not posted yet, remembering each that was; the ones posted now."""
    found = changes(report)
    done = history.notified([change.key for change in found])
    posted = []
    for change in found:
        if change.key in done:
            continue
        why = post(url, change.text)
        if why is not None:
            warn(f"not posted to --notify-url: {why}; it is posted when 'history' is asked again")
            continue
        assert report.latest.number is not None
        history.remember(change.key, report.latest.number, now(), change.text)
        posted.append(change)
    return posted
