"""Durable alert outbox: alerts are rows written with the article, then delivered with retries.

Why an outbox: an alert enqueued in the same transaction as the article change can't be
lost (the article is stored iff its alerts are), and delivery can fail, back off and
resume after a crash. Delivery is at-least-once: each row's outcome is committed right
after its send, so a crash re-sends at most the alert in flight.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlite_utils

from monitor.alerts.base import EVENTS, Channel, DeliveryError, clean_text
from storage.migrations import create_alerts_table

STATUSES = ("pending", "sent", "failed")
# A row being sent is leased (next_attempt_at pushed ahead) so a concurrent deliver()
# skips it; after a crash mid-send, the row is due again when the lease runs out.
LEASE_SECONDS = 600.0
_MAX_ERROR = 500

_INSERT = """
INSERT OR IGNORE INTO alerts
  (alert_id, event, source, article_id, channel, status, attempts, next_attempt_at,
   created_at, payload)
VALUES (:alert_id, :event, :source, :article_id, :channel, 'pending', 0, :now, :now, :payload)
"""


def utc_now() -> datetime:
    return datetime.now(UTC)


def iso(moment: datetime) -> str:
    """`2026-11-27T02:21:46+00:00`: one fixed format, so stored times compare as strings."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def ensure_alerts_table(db: sqlite_utils.Database) -> None:
    """Create `alerts` outside a full archive (tests, tools); the archive's migration owns it."""
    create_alerts_table(db)


def alert_key(
    channel: str,
    event: str,
    source: str,
    article_id: int | None,
    content_hash: str | None,
    extra: str | None = None,
) -> str:
    """Stable id: the same event for the same channel always maps to the same row."""
    material = json.dumps(
        ["v1", channel, event, source, article_id, content_hash, extra],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("utf-8")).hexdigest()[:32]


def build_payload(
    alert_id: str,
    event: str,
    source: str,
    article: Mapping[str, Any] | None,
    reason: str | None,
    detected_at: str,
) -> dict[str, Any]:
    """The frozen JSON sent to jsonl/webhook (ARCHITECTURE.md, "Alert payload")."""
    a = article or {}
    payload = {
        "alert_id": alert_id,
        "event": event,
        "source": source,
        "url": a.get("url"),
        "title": a.get("title"),
        "published": a.get("published"),
        "summary": a.get("summary"),
        "detected_at": detected_at,
        "article_id": a.get("id"),
    }
    if event == "source_error":
        payload["reason"] = reason
    return payload


@dataclass
class DeliveryReport:
    """sent/failed/gave_up: this run's outcomes; pending: rows still pending afterwards."""

    sent: int = 0
    failed: int = 0
    pending: int = 0
    gave_up: int = 0
    errors: list[str] = field(default_factory=list)


class Outbox:
    """Enqueue inside the caller's transaction; deliver due rows per channel with backoff."""

    def __init__(
        self,
        db: sqlite_utils.Database,
        channels: list[Channel],
        *,
        clock: Callable[[], datetime] = utc_now,
        backoff_base: float = 30.0,
        backoff_max: float = 6 * 3600,
    ) -> None:
        self.db = db
        self.channels = list(channels)
        self.clock = clock
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self._by_name = {c.name: c for c in self.channels}
        self._orphans_reported: set[str] = set()
        self._rng = random.Random()
        ensure_alerts_table(db)

    def enqueue(
        self,
        event: str,
        source: str,
        article: Mapping[str, Any] | None = None,
        *,
        reason: str | None = None,
        detected_at: str | None = None,
        dedupe: str | None = None,
    ) -> list[str]:
        """Add a pending row per matching channel; returns the alert_ids newly inserted.

        `dedupe` is what makes a `source_error` distinct (default: its reason and the UTC
        day of detection), so one broken selector alerts once a day, not once per page.

        Never commits and never BEGINs: it runs inside the caller's transaction, which
        commits the article change and its alerts together. Use `with db.atomic():`;
        under a bare `with db.conn:` sqlite-utils write methods commit on their own.
        """
        _check_event(event, article)
        now = iso(self.clock())
        detected = detected_at or now
        a = article or {}
        inserted = []
        for channel in self.channels:
            if not channel.matches(event, source, a.get("title"), a.get("body")):
                continue
            key_parts = _key_parts(event, a, dedupe or f"{reason or ''}|{detected[:10]}")
            alert_id = alert_key(channel.name, event, source, *key_parts)
            payload = build_payload(alert_id, event, source, article, reason, detected)
            row = {
                "alert_id": alert_id,
                "event": event,
                "source": source,
                "article_id": a.get("id"),
                "channel": channel.name,
                "now": now,
                "payload": json.dumps(payload, ensure_ascii=False),
            }
            # The raw connection, not db.execute(): sqlite-utils would auto-commit.
            if self.db.conn.execute(_INSERT, row).rowcount == 1:
                inserted.append(alert_id)
        return inserted

    def deliver(self, *, force: bool = False) -> DeliveryReport:
        """Send due rows (force: also failed ones, ignoring backoff); commit after each send.

        Call it outside any transaction, and off the asyncio loop: sends block.
        """
        if self.db.conn.in_transaction:
            raise RuntimeError(
                "deliver() commits after every send; call it outside a transaction "
                "(is an enqueue() still uncommitted?)"
            )
        report = DeliveryReport()
        for name, rows in self._due(force).items():
            channel = self._by_name.get(name)
            if channel is None:
                self._report_orphan(name, len(rows), report)
                continue
            batches = [rows] if channel.digest else [[row] for row in rows]
            for batch in batches:
                self._deliver_batch(channel, batch, report)
        report.pending = self.counts()["pending"]
        return report

    def counts(self) -> dict[str, int]:
        """Rows per status; every status is present, zero included."""
        result = dict.fromkeys(STATUSES, 0)
        for row in self.db.query("SELECT status, COUNT(*) AS n FROM alerts GROUP BY status"):
            result[row["status"]] = row["n"]
        return result

    def list(self, status: str | None = None) -> list[dict]:
        """All rows (oldest first), optionally of one status, with the payload decoded."""
        if status is not None and status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        where, params = ("WHERE status = ?", [status]) if status else ("", [])
        rows = self.db.query(f"SELECT * FROM alerts {where} ORDER BY id", params)
        return [{**row, "payload": json.loads(row["payload"])} for row in rows]

    def _due(self, force: bool) -> dict[str, list[dict]]:
        """Due rows grouped by channel, oldest first."""
        if force:
            sql = "SELECT * FROM alerts WHERE status IN ('pending', 'failed') ORDER BY id"
            params: list[str] = []
        else:
            sql = (
                "SELECT * FROM alerts WHERE status = 'pending' AND next_attempt_at <= ? ORDER BY id"
            )
            params = [iso(self.clock())]
        grouped: dict[str, list[dict]] = {}
        for row in self.db.query(sql, params):
            grouped.setdefault(row["channel"], []).append(row)
        return grouped

    def _deliver_batch(self, channel: Channel, rows: list[dict], report: DeliveryReport) -> None:
        claimed = self._claim(rows)
        if not claimed:
            return
        try:
            channel.send([json.loads(row["payload"]) for row in claimed])
        except Exception as exc:  # any channel bug must become a retry, not a crash
            self._record_failure(channel, claimed, exc, report)
        else:
            self._record_success(claimed, report)

    def _claim(self, rows: list[dict]) -> list[dict]:
        """Lease rows unchanged since we read them; a concurrent deliver() gets none of them."""
        lease = iso(self.clock() + timedelta(seconds=LEASE_SECONDS))
        claimed = []
        with self.db.atomic():
            for row in rows:
                cursor = self.db.conn.execute(
                    "UPDATE alerts SET next_attempt_at = ? WHERE id = ? AND status = ?"
                    " AND attempts = ? AND next_attempt_at IS ?",
                    (lease, row["id"], row["status"], row["attempts"], row["next_attempt_at"]),
                )
                if cursor.rowcount == 1:
                    claimed.append(row)
        return claimed

    def _record_success(self, rows: list[dict], report: DeliveryReport) -> None:
        now = iso(self.clock())
        with self.db.atomic():
            for row in rows:
                self.db.conn.execute(
                    "UPDATE alerts SET status = 'sent', sent_at = ? WHERE id = ?", (now, row["id"])
                )
        report.sent += len(rows)

    def _record_failure(
        self, channel: Channel, rows: list[dict], exc: Exception, report: DeliveryReport
    ) -> None:
        """attempts += 1, exponential backoff with jitter, `failed` at max_attempts."""
        error = _safe_error(channel, exc)
        now = self.clock()
        with self.db.atomic():
            for row in rows:
                attempts = row["attempts"] + 1
                status = "failed" if attempts >= channel.max_attempts else "pending"
                if status == "failed" and row["status"] != "failed":
                    report.gave_up += 1
                retry_at = iso(now + timedelta(seconds=self._backoff(attempts)))
                self.db.conn.execute(
                    "UPDATE alerts SET attempts = ?, last_error = ?, next_attempt_at = ?,"
                    " status = ? WHERE id = ?",
                    (attempts, error, retry_at, status, row["id"]),
                )
        report.failed += len(rows)
        report.errors.append(f"channel {channel.name!r} ({len(rows)} alert(s)): {error}")

    def _backoff(self, attempts: int) -> float:
        """base * 2**(attempts-1), capped at backoff_max, ±10% jitter against thundering herds."""
        delay = min(self.backoff_base * 2.0 ** min(attempts - 1, 64), self.backoff_max)
        return delay * self._rng.uniform(0.9, 1.1)

    def _report_orphan(self, name: str, count: int, report: DeliveryReport) -> None:
        """Rows of a channel removed from the config wait; say so once per Outbox."""
        if name in self._orphans_reported:
            return
        self._orphans_reported.add(name)
        report.errors.append(
            f"{count} alert(s) for channel {name!r} wait undelivered: "
            "no channel of that name is configured"
        )


def _check_event(event: str, article: Mapping[str, Any] | None) -> None:
    if event not in EVENTS:
        raise ValueError(f"unknown event {event!r} (allowed: {', '.join(sorted(EVENTS))})")
    if event == "source_error" and article is not None:
        raise ValueError("source_error alerts carry a `reason`, not an article")
    if event != "source_error" and (article is None or article.get("id") is None):
        raise ValueError(f"{event!r} alerts need an article with an `id`")


def _key_parts(
    event: str, article: Mapping[str, Any], problem: str
) -> tuple[int | None, str | None, str | None]:
    """What makes an event distinct: `new` once per article, `updated`/`removed` once per
    content version, `source_error` once per source and problem key."""
    if event == "source_error":
        return None, None, problem
    if event == "new":
        return article["id"], None, None
    return article["id"], article.get("content_hash"), None


def _safe_error(channel: Channel, exc: Exception) -> str:
    """The stored/logged error: the channel's secrets masked, one line, bounded."""
    text = str(exc) if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
    return clean_text(channel.redact(text))[:_MAX_ERROR]
