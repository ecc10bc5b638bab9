"""The outbox over a real SQLite file, delivering to real channels (webhook, jsonl)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlite_utils

from monitor.alerts import Channel, DeliveryError, build_channels
from monitor.alerts.webhook import WebhookChannel
from monitor.outbox import LEASE_SECONDS, Outbox, alert_key, ensure_alerts_table
from tests.test_alerts import SECRET, Receiver

COLUMNS = [
    "id",
    "alert_id",
    "event",
    "source",
    "article_id",
    "channel",
    "status",
    "attempts",
    "next_attempt_at",
    "last_error",
    "created_at",
    "sent_at",
    "payload",
]


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 27, 2, 21, 46, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class Recorder(Channel, register=False):
    """A test channel that records sends and fails on demand (its failure is the point)."""

    kind = "recorder"

    def __init__(self, fail: int = 0, error: Exception | None = None, **common) -> None:
        super().__init__(**common)
        self.fail = fail
        self.error = error or DeliveryError("recorder: boom")
        self.sent: list[list[dict]] = []

    def send(self, payloads: list[dict]) -> None:
        if self.fail:
            self.fail -= 1
            raise self.error
        self.sent.append(payloads)


def article(i: int, **overrides: object) -> dict:
    base = {
        "id": i,
        "url": f"https://en.odkb-csto.org/news/{i}/",
        "title": f"Article {i}",
        "published": "2024-04-22T10:00:00+00:00",
        "summary": f"Summary {i}.",
        "body": f"Body {i}.",
        "content_hash": f"hash{i}",
    }
    return {**base, **overrides}


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "news.db"


@pytest.fixture
def db(db_path: Path) -> Iterator[sqlite_utils.Database]:
    database = sqlite_utils.Database(db_path)
    ensure_alerts_table(database)
    yield database
    database.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as rec:
        yield rec


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def enqueue(outbox: Outbox, *args, **kwargs) -> list[str]:
    with outbox.db.atomic():
        return outbox.enqueue(*args, **kwargs)


# --- schema and keys -----------------------------------------------------------------


def test_alerts_table_schema(db: sqlite_utils.Database) -> None:
    assert [c.name for c in db["alerts"].columns] == COLUMNS
    assert db["alerts"].pks == ["id"]
    unique = [i for i in db["alerts"].indexes if i.unique]
    assert [i.columns for i in unique] == [["alert_id"]]
    ensure_alerts_table(db)  # idempotent


def test_alert_key_is_stable_and_distinct() -> None:
    key = alert_key("hook", "new", "csto-en", 1, None)
    assert key == alert_key("hook", "new", "csto-en", 1, None)
    assert len(key) >= 16 and int(key, 16) >= 0
    others = {
        alert_key("other", "new", "csto-en", 1, None),
        alert_key("hook", "updated", "csto-en", 1, None),
        alert_key("hook", "new", "csto-ru", 1, None),
        alert_key("hook", "new", "csto-en", 2, None),
        alert_key("hook", "new", "csto-en", 1, "h"),
        alert_key("hook", "new", "csto-en", 1, None, "x"),
    }
    assert key not in others and len(others) == 6


# --- enqueue -------------------------------------------------------------------------


def test_enqueue_is_idempotent(db, clock) -> None:
    outbox = Outbox(db, [Recorder()], clock=clock)
    first = enqueue(outbox, "new", "csto-en", article(1))
    assert len(first) == 1
    assert enqueue(outbox, "new", "csto-en", article(1, title="edited")) == []
    assert outbox.counts() == {"pending": 1, "sent": 0, "failed": 0}
    (row,) = outbox.list()
    assert row["alert_id"] == first[0] and row["channel"] == "recorder"
    assert row["payload"] == {
        "alert_id": first[0],
        "event": "new",
        "source": "csto-en",
        "url": "https://en.odkb-csto.org/news/1/",
        "title": "Article 1",
        "published": "2024-04-22T10:00:00+00:00",
        "summary": "Summary 1.",
        "detected_at": "2026-11-27T02:21:46+00:00",
        "article_id": 1,
    }


def test_updated_alerts_once_per_content_version(db, clock) -> None:
    outbox = Outbox(db, [Recorder(events=["updated"])], clock=clock)
    assert enqueue(outbox, "updated", "csto-en", article(1, content_hash="v2"))
    assert not enqueue(outbox, "updated", "csto-en", article(1, content_hash="v2"))
    assert enqueue(outbox, "updated", "csto-en", article(1, content_hash="v3"))


def test_enqueue_joins_the_callers_transaction(db, clock) -> None:
    """The article write and its alerts commit together, or not at all."""
    outbox = Outbox(db, [Recorder()], clock=clock)
    with pytest.raises(RuntimeError), db.atomic():
        db["articles"].insert({"id": 1, "title": "Article 1"})
        outbox.enqueue("new", "csto-en", article(1))
        raise RuntimeError("archive failed after enqueue")
    assert outbox.counts()["pending"] == 0 and not db["articles"].exists()
    with pytest.raises(RuntimeError), db.conn:  # the legacy sqlite3 form rolls back too
        outbox.enqueue("new", "csto-en", article(1))
        raise RuntimeError("boom")
    assert outbox.counts()["pending"] == 0


def test_enqueue_does_not_commit(db_path, db, clock) -> None:
    outbox = Outbox(db, [Recorder()], clock=clock)
    outbox.enqueue("new", "csto-en", article(1))
    assert db.conn.in_transaction
    other = sqlite_utils.Database(db_path)
    assert other.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 0
    with pytest.raises(RuntimeError, match="outside a transaction"):
        outbox.deliver()
    db.conn.commit()
    assert other.execute("SELECT COUNT(*) FROM alerts").fetchone()[0] == 1
    other.close()


def test_enqueue_rejects_bad_events(db, clock) -> None:
    outbox = Outbox(db, [Recorder()], clock=clock)
    with pytest.raises(ValueError, match="unknown event"):
        outbox.enqueue("created", "csto-en", article(1))
    with pytest.raises(ValueError, match="need an article"):
        outbox.enqueue("new", "csto-en")
    with pytest.raises(ValueError, match="not an article"):
        outbox.enqueue("source_error", "csto-en", article(1), reason="x")


def test_source_error_payload_and_dedupe(db, clock) -> None:
    outbox = Outbox(db, [Recorder(events=["source_error"], keywords=["nomatch"])], clock=clock)
    assert enqueue(outbox, "source_error", "csto-en", reason="HTTP 503")
    assert not enqueue(outbox, "source_error", "csto-en", reason="HTTP 503")  # same day
    clock.advance(86400)
    assert enqueue(outbox, "source_error", "csto-en", reason="HTTP 503")
    assert enqueue(outbox, "source_error", "csto-en", reason="timeout")  # another reason
    assert enqueue(outbox, "source_error", "csto-en", reason="HTTP 503", dedupe="run-7")
    assert not enqueue(outbox, "source_error", "csto-en", reason="HTTP 503", dedupe="run-7")
    payload = outbox.list()[0]["payload"]
    assert payload["reason"] == "HTTP 503" and payload["event"] == "source_error"
    assert payload["url"] is None and payload["title"] is None and payload["article_id"] is None


def test_filters_choose_channels(db, clock) -> None:
    channels = [
        Recorder(name="all"),
        Recorder(name="ru", sources=["csto-ru"]),
        Recorder(name="kw", keywords=["SUMMIT"]),
        Recorder(name="removed", events=["removed"]),
    ]
    outbox = Outbox(db, channels, clock=clock)
    enqueue(outbox, "new", "csto-en", article(1, title="Minsk summit"))
    enqueue(outbox, "new", "csto-en", article(2, body="A summit in the body"))
    enqueue(outbox, "new", "csto-en", article(3, title="Weather"))
    enqueue(outbox, "removed", "csto-ru", article(4))
    by_channel: dict[str, list[int]] = {}
    for row in outbox.list():
        by_channel.setdefault(row["channel"], []).append(row["article_id"])
    assert by_channel == {"all": [1, 2, 3], "kw": [1, 2], "removed": [4]}


# --- deliver -------------------------------------------------------------------------


def test_webhook_outage_every_alert_arrives_exactly_once(db, clock, receiver) -> None:
    receiver.fail_first = 5
    (hook,) = build_channels([{"type": "webhook", "url": f"{receiver.url}/hook", "timeout": 5}])
    outbox = Outbox(db, [hook], clock=clock)
    ids = [i for n in range(1, 5) for i in enqueue(outbox, "new", "csto-en", article(n))]
    for _ in range(10):
        report = outbox.deliver()
        if report.pending == 0:
            break
        clock.advance(3600)
    assert report.pending == 0 and outbox.counts()["sent"] == 4
    accepted = [r["body"]["alert_id"] for r in receiver.accepted]
    assert sorted(accepted) == sorted(ids)  # every alert, exactly once among the 2xx
    assert len(receiver.requests) == 4 + 5
    assert all(row["sent_at"] for row in outbox.list("sent"))


def test_backoff_grows_then_gives_up(db, clock) -> None:
    channel = Recorder(fail=100, max_attempts=4)
    outbox = Outbox(db, [channel], clock=clock, backoff_base=30, backoff_max=100)
    enqueue(outbox, "new", "csto-en", article(1))
    delays = []
    for attempt in range(1, 5):
        report = outbox.deliver()
        assert report.failed == 1 and report.sent == 0
        (row,) = outbox.list()
        assert row["attempts"] == attempt and "boom" in row["last_error"]
        delays.append((datetime.fromisoformat(row["next_attempt_at"]) - clock.now).total_seconds())
        assert outbox.deliver().failed == 0  # not due before the backoff ends
        clock.advance(delays[-1] + 1)
    for delay, expected in zip(delays, [30, 60, 100, 100], strict=True):
        assert expected * 0.9 - 1 <= delay <= expected * 1.1 + 1
    assert report.gave_up == 1 and outbox.counts() == {"pending": 0, "sent": 0, "failed": 1}
    clock.advance(10**6)
    assert outbox.deliver().failed == 0  # failed rows wait for force


def test_force_retries_failed_and_ignores_backoff(db, clock) -> None:
    channel = Recorder(fail=1, max_attempts=1)
    outbox = Outbox(db, [channel], clock=clock)
    enqueue(outbox, "new", "csto-en", article(1))
    assert outbox.deliver().gave_up == 1
    report = outbox.deliver(force=True)
    assert report.sent == 1 and outbox.counts()["sent"] == 1 and len(channel.sent) == 1


def test_any_exception_is_recorded_redacted(db, clock) -> None:
    hook = WebhookChannel(url=f"https://hooks.example.com/h/{SECRET}")
    leaky = Recorder(name="leaky", fail=1, error=ValueError(f"bad https://x/{SECRET}"))
    leaky.secrets = hook.secrets  # type: ignore[method-assign]
    outbox = Outbox(db, [leaky], clock=clock)
    enqueue(outbox, "new", "csto-en", article(1))
    report = outbox.deliver()
    (row,) = outbox.list()
    assert row["last_error"].startswith("ValueError: bad https://x/")
    assert SECRET not in row["last_error"] and SECRET not in " ".join(report.errors)


def test_webhook_secret_never_stored(db, clock, receiver) -> None:
    receiver.status = 500
    url = f"http://127.0.0.1:{receiver.server.server_address[1]}/h/{SECRET}"
    outbox = Outbox(db, [WebhookChannel(url=url)], clock=clock)
    enqueue(outbox, "new", "csto-en", article(1))
    report = outbox.deliver()
    (row,) = outbox.list()
    assert "HTTP 500" in row["last_error"] and SECRET not in row["last_error"]
    assert SECRET not in " ".join(report.errors)


def test_digest_sends_one_message_with_all_items(db, clock, receiver) -> None:
    hook = WebhookChannel(url=f"{receiver.url}/digest", digest=True)
    outbox = Outbox(db, [hook], clock=clock)
    ids = [i for n in range(1, 6) for i in enqueue(outbox, "new", "csto-en", article(n))]
    assert outbox.deliver().sent == 5
    (request,) = receiver.requests
    assert request["body"]["digest"] is True and request["body"]["alert_ids"] == ids
    assert [item["article_id"] for item in request["body"]["items"]] == [1, 2, 3, 4, 5]


def test_digest_failure_retries_every_item(db, clock) -> None:
    channel = Recorder(fail=1, digest=True)
    outbox = Outbox(db, [channel], clock=clock)
    for n in (1, 2):
        enqueue(outbox, "new", "csto-en", article(n))
    assert outbox.deliver().failed == 2
    clock.advance(3600)
    assert outbox.deliver().sent == 2 and len(channel.sent) == 1


def test_crash_between_enqueue_and_deliver(db_path, db, clock, tmp_path) -> None:
    jsonl = tmp_path / "alerts.jsonl"
    blocks = [{"type": "jsonl", "path": str(jsonl)}]
    ids = enqueue(Outbox(db, build_channels(blocks), clock=clock), "new", "csto-en", article(1))
    db.close()  # the process dies here; the commit already happened
    reopened = sqlite_utils.Database(db_path)
    report = Outbox(reopened, build_channels(blocks), clock=clock).deliver()
    assert report.sent == 1
    assert [json.loads(line)["alert_id"] for line in jsonl.read_text().splitlines()] == ids
    reopened.close()


class Crash(BaseException):
    """Stands for the process dying mid-send (not an Exception: nothing may catch it)."""


class CrashOnSecond(Recorder, register=False):
    def send(self, payloads: list[dict]) -> None:
        if self.sent:
            raise Crash()
        super().send(payloads)


def test_crash_mid_delivery_resends_only_the_alert_in_flight(db_path, db, clock) -> None:
    outbox = Outbox(db, [CrashOnSecond(name="recorder")], clock=clock)
    for n in (1, 2, 3):
        enqueue(outbox, "new", "csto-en", article(n))
    with pytest.raises(Crash):
        outbox.deliver()
    db.close()
    reopened = sqlite_utils.Database(db_path)
    survivor = Recorder()
    after = Outbox(reopened, [survivor], clock=clock)
    assert after.deliver().sent == 1  # alert 3 was never touched
    clock.advance(LEASE_SECONDS + 1)
    assert after.deliver().sent == 1  # alert 2 was in flight: re-sent once its lease ends
    resent = [p["article_id"] for batch in survivor.sent for p in batch]
    assert sorted(resent) == [2, 3] and after.counts()["sent"] == 3
    reopened.close()


def test_concurrent_deliver_skips_leased_rows(db_path, db, clock) -> None:
    other_db = sqlite_utils.Database(db_path)
    other = Outbox(other_db, [Recorder()], clock=clock)
    inner: list = []

    class Reentrant(Recorder, register=False):
        def send(self, payloads: list[dict]) -> None:
            inner.append(other.deliver())  # a second process delivering at the same moment
            super().send(payloads)

    outbox = Outbox(db, [Reentrant()], clock=clock)
    enqueue(outbox, "new", "csto-en", article(1))
    assert outbox.deliver().sent == 1
    assert inner[0].sent == 0 and outbox.counts()["sent"] == 1
    other_db.close()


def test_unconfigured_channel_rows_wait_and_are_reported_once(db, clock) -> None:
    enqueue(Outbox(db, [Recorder(name="gone")], clock=clock), "new", "csto-en", article(1))
    outbox = Outbox(db, [Recorder(name="kept")], clock=clock)
    first = outbox.deliver()
    assert first.pending == 1 and len(first.errors) == 1 and "'gone'" in first.errors[0]
    assert outbox.deliver().errors == []
    assert outbox.counts() == {"pending": 1, "sent": 0, "failed": 0}


def test_list_and_counts(db, clock) -> None:
    outbox = Outbox(
        db, [Recorder(name="a"), Recorder(name="b", fail=1, max_attempts=1)], clock=clock
    )
    enqueue(outbox, "new", "csto-en", article(1))
    outbox.deliver()
    assert outbox.counts() == {"pending": 0, "sent": 1, "failed": 1}
    assert [r["channel"] for r in outbox.list("sent")] == ["a"]
    assert [r["channel"] for r in outbox.list("failed")] == ["b"]
    assert len(outbox.list()) == 2
    with pytest.raises(ValueError):
        outbox.list("bogus")
