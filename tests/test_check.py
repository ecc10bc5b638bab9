"""`newsmon check` end to end: the real CLI against the replica, real SQLite, real receivers.

Each test builds a small replica (5 English and 3 Russian articles) so a check costs about a
second; the CLI runs in a subprocess because Scrapy's reactor runs once per process.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import closing
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from monitor.replica import Article, Replica, ReplicaServer
from tests.conftest import CSTO_SELECTORS, FAST_SETTINGS, Workspace

ALL_EVENTS = '["new", "updated", "removed", "source_error"]'
PAYLOAD_KEYS = {
    "alert_id",
    "event",
    "source",
    "url",
    "title",
    "published",
    "summary",
    "detected_at",
    "article_id",
}
JSON_KEYS = (
    "requests",
    "new",
    "updated",
    "removed",
    "unchanged",
    "errors",
    "alerts_sent",
    "alerts_pending",
)
REVISIT_ALWAYS = 'revisit_days = 100000\nrevisit_every = "0s"\n'


# -- helpers shared with the other check/alerts test files -------------------------------------


def source_text(
    name: str, url: str, language: str, *, revisit: bool = False, selectors: str = CSTO_SELECTORS
) -> str:
    block = f'\n[[sources]]\nname = "{name}"\nstart_urls = ["{url}"]\nlanguage = "{language}"\n'
    return block + (REVISIT_ALWAYS if revisit else "") + selectors


def jsonl_channel(path: Path, events: str = ALL_EVENTS, extra: str = "") -> str:
    return f'\n[[alerts]]\ntype = "jsonl"\npath = "{path}"\nevents = {events}\n{extra}'


def webhook_channel(url: str, events: str = '["new"]', extra: str = "") -> str:
    return f'\n[[alerts]]\ntype = "webhook"\nurl = "{url}"\nevents = {events}\n{extra}'


def site_config(
    server: ReplicaServer,
    channels: str = "",
    *,
    russian: bool = False,
    revisit: bool = False,
    en_selectors: str = CSTO_SELECTORS,
) -> str:
    """database, the channels, csto-en (and csto-ru), Scrapy politeness off."""
    text = 'database = "newsmon.db"\n' + channels
    text += source_text("csto-en", server.en_url, "en", revisit=revisit, selectors=en_selectors)
    if russian:
        text += source_text("csto-ru", server.ru_url, "ru", revisit=revisit)
    return text + FAST_SETTINGS


def small_server() -> ReplicaServer:
    return ReplicaServer(Replica(articles=5, per_page=10), Replica(articles=3, language="ru"))


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def query(workspace: Workspace, sql: str, params: tuple = ()) -> list[dict[str, Any]]:
    with closing(sqlite3.connect(workspace.database)) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute(sql, params)]


def alert_rows(workspace: Workspace, event: str | None = None) -> list[dict[str, Any]]:
    if event is None:
        return query(workspace, "select * from alerts order by id")
    return query(workspace, "select * from alerts where event = ? order by id", (event,))


def stored_article(workspace: Workspace, article: Article) -> dict[str, Any]:
    rows = query(workspace, "select * from articles where url like ?", (f"%/{article.slug}/",))
    assert len(rows) == 1, f"expected one stored row for {article.slug}, got {rows}"
    return rows[0]


def integrity(database: Path) -> str:
    with closing(sqlite3.connect(database)) as conn:
        return conn.execute("pragma integrity_check").fetchone()[0]


def check_ok(workspace: Workspace, *args: str) -> subprocess.CompletedProcess[str]:
    result = workspace.run("check", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


class WebhookReceiver:
    """A real HTTP endpoint on 127.0.0.1 that answers 500 while `down`, else 200."""

    def __init__(self) -> None:
        self.down = False
        self.received: list[tuple[int, dict[str, Any]]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = 500 if receiver.down else 200
                with receiver._lock:
                    receiver.received.append((status, json.loads(body)))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/hook"

    def accepted_ids(self) -> list[str]:
        with self._lock:
            return [payload["alert_id"] for status, payload in self.received if status == 200]

    def refused(self) -> int:
        with self._lock:
            return sum(1 for status, _ in self.received if status != 200)

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def site() -> Iterator[ReplicaServer]:
    with small_server() as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


# -- baseline -----------------------------------------------------------------------------------


def test_first_check_stores_every_article_and_alerts_nothing(site, workspace):
    alerts_file = workspace.path / "alerts.jsonl"
    workspace.write_config(site_config(site, jsonl_channel(alerts_file), russian=True))

    report = json.loads(check_ok(workspace, "--json").stdout)

    assert report["new"] == 5 + 3
    assert workspace.db()["articles"].count == 5 + 3
    assert alert_rows(workspace) == []
    assert read_jsonl(alerts_file) == []


def test_alert_on_first_run_alerts_every_article_of_the_baseline(site, workspace):
    alerts_file = workspace.path / "alerts.jsonl"
    workspace.write_config(site_config(site, jsonl_channel(alerts_file, '["new"]')))

    check_ok(workspace, "--alert-on-first-run")

    lines = read_jsonl(alerts_file)
    stored = {row["url"] for row in query(workspace, "select url from articles")}
    assert len(stored) == 5
    assert sorted(line["url"] for line in lines) == sorted(stored)
    assert {line["event"] for line in lines} == {"new"}


# -- new articles -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def published_twice_checked(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """Baseline, publish one article, then two checks: what the jsonl channel holds after each."""
    workspace = Workspace(tmp_path_factory.mktemp("published"))
    alerts_file = workspace.path / "alerts.jsonl"
    with small_server() as server:
        workspace.write_config(site_config(server, jsonl_channel(alerts_file, '["new"]')))
        check_ok(workspace)
        article = server.replica_en.publish(title="Talks on information security held in Minsk")
        check_ok(workspace)
        after_first = read_jsonl(alerts_file)
        check_ok(workspace)
        yield {
            "workspace": workspace,
            "article": article,
            "url": server.describe(article)["url"],
            "after_first": after_first,
            "after_second": read_jsonl(alerts_file),
        }


def test_published_article_alerts_exactly_once_over_repeated_checks(published_twice_checked):
    story = published_twice_checked
    assert [line["url"] for line in story["after_first"]] == [story["url"]]
    assert story["after_second"] == story["after_first"]


def test_new_alert_payload_carries_the_documented_fields(published_twice_checked):
    story = published_twice_checked
    (payload,) = story["after_first"]
    row = stored_article(story["workspace"], story["article"])

    assert set(payload) == PAYLOAD_KEYS
    assert payload["event"] == "new"
    assert payload["source"] == "csto-en"
    assert payload["title"] == story["article"].title
    assert payload["published"] == story["article"].published.isoformat()
    assert payload["summary"]
    assert payload["article_id"] == row["id"]
    assert payload["detected_at"].endswith("+00:00")
    (outbox_row,) = alert_rows(story["workspace"])
    assert outbox_row["alert_id"] == payload["alert_id"]
    assert outbox_row["status"] == "sent"


def test_pinned_old_item_neither_stops_the_walk_nor_alerts(site, workspace):
    alerts_file = workspace.path / "alerts.jsonl"
    workspace.write_config(site_config(site, jsonl_channel(alerts_file, '["new"]')))
    check_ok(workspace)
    pinned = site.replica_en.pinned_article()
    published = [site.replica_en.publish() for _ in range(12)]  # 10 per page: spills onto page 2

    check_ok(workspace)

    alerted = [line["url"] for line in read_jsonl(alerts_file)]
    expected = [stored_article(workspace, article)["url"] for article in published]
    assert sorted(alerted) == sorted(expected)  # each of the 12 once, pages 1 and 2
    assert stored_article(workspace, pinned)["url"] not in alerted


# -- edits and removals -------------------------------------------------------------------------


def test_edited_article_gives_one_updated_alert_and_a_revision(site, workspace):
    alerts_file = workspace.path / "alerts.jsonl"
    workspace.write_config(site_config(site, jsonl_channel(alerts_file), revisit=True))
    check_ok(workspace)
    edited = site.replica_en.edit(3, body="Corrected: the meeting was moved to Astana.")

    check_ok(workspace)
    check_ok(workspace)

    row = stored_article(workspace, edited)
    assert [(line["event"], line["article_id"]) for line in read_jsonl(alerts_file)] == [
        ("updated", row["id"])
    ]
    revisions = query(workspace, "select body from revisions where article_id = ?", (row["id"],))
    assert len(revisions) == 2
    assert "Astana" in row["body"]


def test_deleted_article_gives_one_removed_alert_and_removed_at(site, workspace):
    alerts_file = workspace.path / "alerts.jsonl"
    workspace.write_config(site_config(site, jsonl_channel(alerts_file), revisit=True))
    check_ok(workspace)
    gone = site.replica_en.article(2)
    site.replica_en.delete(2)

    check_ok(workspace)
    check_ok(workspace)

    row = stored_article(workspace, gone)
    assert row["removed_at"] is not None
    assert [(line["event"], line["article_id"]) for line in read_jsonl(alerts_file)] == [
        ("removed", row["id"])
    ]
    others = query(workspace, "select id from articles where removed_at is not null")
    assert others == [{"id": row["id"]}]


# -- broken sources -----------------------------------------------------------------------------


def test_listing_503_fails_the_check_without_alerts_or_removals_and_the_next_check_recovers(
    site, workspace
):
    alerts_file = workspace.path / "alerts.jsonl"
    workspace.write_config(site_config(site, jsonl_channel(alerts_file), revisit=True))
    check_ok(workspace)
    fresh = site.replica_en.publish(title="Joint staff exercises were conducted in Bishkek")
    # Listing and article pages all answer 503, more often than the retries can absorb.
    site.replica_en.faults.add(path="/news/", kind="status", code=503, times=100)

    failed = workspace.run("check", "--json")

    assert failed.returncode != 0
    assert json.loads(failed.stdout)["removed"] == 0
    last = query(workspace, "select status from crawl_runs where source = 'csto-en' order by id")
    assert last[-1]["status"] == "failed"
    assert query(workspace, "select id from articles where removed_at is not null") == []
    assert alert_rows(workspace, "new") == [] and alert_rows(workspace, "removed") == []
    assert all(line["event"] == "source_error" for line in read_jsonl(alerts_file))

    site.replica_en.faults.clear()
    check_ok(workspace)
    new_lines = [line for line in read_jsonl(alerts_file) if line["event"] == "new"]
    assert [line["url"] for line in new_lines] == [stored_article(workspace, fresh)["url"]]


def test_failed_listing_marks_nothing_removed_even_if_an_article_page_answers_404(site, workspace):
    """A broken source never marks articles removed: the 404 waits for a healthy check."""
    alerts_file = workspace.path / "alerts.jsonl"
    workspace.write_config(site_config(site, jsonl_channel(alerts_file), revisit=True))
    check_ok(workspace)
    site.replica_en.delete(2)
    site.replica_en.faults.add(path="/news/", exact=True, kind="status", code=503, times=100)

    failed = workspace.run("check")

    assert failed.returncode != 0
    assert query(workspace, "select id from articles where removed_at is not null") == []
    assert alert_rows(workspace, "removed") == []


def test_unconfigured_item_selector_raises_source_error_while_fallback_still_finds_articles(
    site, workspace
):
    alerts_file = workspace.path / "alerts.jsonl"
    channel = jsonl_channel(alerts_file, '["source_error"]')
    workspace.write_config(site_config(site, channel, revisit=True))
    check_ok(workspace)
    broken = CSTO_SELECTORS.replace('item = "div.news-item"', 'item = "div.no-such-item"')
    workspace.write_config(site_config(site, channel, revisit=True, en_selectors=broken))
    fresh = site.replica_en.publish(title="Consultations on crisis response were held in Yerevan")

    workspace.run("check")

    (line,) = read_jsonl(alerts_file)
    assert line["event"] == "source_error"
    assert line["source"] == "csto-en"
    assert "selector `item` matched nothing" in line["reason"]
    assert site.en_url in line["reason"]
    assert stored_article(workspace, fresh)["title"] == fresh.title  # fallback found it
    assert query(workspace, "select id from articles where removed_at is not null") == []


def test_source_that_yields_nothing_makes_check_exit_non_zero(site, workspace):
    workspace.write_config(site_config(site, revisit=True))
    check_ok(workspace)
    site.replica_en.faults.add(path="/news/", exact=True, kind="empty", times=10)

    result = workspace.run("check")

    assert result.returncode != 0
    last = query(workspace, "select status from crawl_runs order by id desc limit 1")
    assert last[0]["status"] in ("empty", "failed")
    assert query(workspace, "select id from articles where removed_at is not null") == []


# -- cost of an unchanged site and the --json report -------------------------------------------


def test_unchanged_site_costs_one_304_listing_request_per_start_url(site, workspace):
    workspace.write_config(site_config(site, russian=True))
    check_ok(workspace)
    site.replica_en.reset_requests()
    site.replica_ru.reset_requests()

    report = json.loads(check_ok(workspace, "--json").stdout)

    log = site.replica_en.requests + site.replica_ru.requests
    listing = [(path, status) for _, path, status in log if not path.endswith("robots.txt")]
    assert sorted(listing) == [("/news/", 304), ("/ru/news/", 304)]
    assert report["new"] == report["updated"] == report["removed"] == 0
    print(f"unchanged check: {len(log)} requests incl. robots.txt, log={log}")


def test_check_json_prints_exactly_one_object_with_the_counts(site, workspace):
    workspace.write_config(site_config(site, jsonl_channel(workspace.path / "a.jsonl")))

    result = check_ok(workspace, "--json", "--alert-on-first-run")

    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1
    report = json.loads(lines[0])
    assert isinstance(report, dict)
    assert set(JSON_KEYS) <= set(report)
    assert all(isinstance(report[key], int) for key in JSON_KEYS)
    assert report["new"] == 5
    assert report["alerts_sent"] == 5 and report["alerts_pending"] == 0


# -- delivery -----------------------------------------------------------------------------------


def test_webhook_down_then_back_receives_every_alert_exactly_once(site, workspace, receiver):
    workspace.write_config(site_config(site, webhook_channel(receiver.url)))
    check_ok(workspace)
    published = [site.replica_en.publish() for _ in range(3)]
    receiver.down = True

    workspace.run("check")

    pending = alert_rows(workspace)
    assert len(pending) == 3
    assert all(row["status"] == "pending" and row["attempts"] >= 1 for row in pending)
    assert all("500" in row["last_error"] for row in pending)
    assert receiver.accepted_ids() == [] and receiver.refused() >= 3

    receiver.down = False
    retry = workspace.run("alerts", "--retry")
    assert retry.returncode == 0, retry.stderr
    check_ok(workspace)  # a later tick must not send them again

    ids = [row["alert_id"] for row in alert_rows(workspace)]
    assert sorted(receiver.accepted_ids()) == sorted(ids)
    assert {row["status"] for row in alert_rows(workspace)} == {"sent"}
    urls = {stored_article(workspace, article)["url"] for article in published}
    assert {payload["url"] for status, payload in receiver.received if status == 200} == urls


CRASH_SCRIPT = """
import json, os, sys
from monitor.config import load_config
from monitor.runner import crawl_async, run_in_reactor

config = load_config(sys.argv[1])

async def main(process):
    return await crawl_async(process, config, mode="check")

report = run_in_reactor(config, main)
print(json.dumps(report.as_dict()), flush=True)
os._exit(0)  # dies after storing, before any delivery
"""


def test_crash_between_storing_and_delivering_is_recovered_by_the_next_check(site, workspace):
    alerts_file = workspace.path / "alerts.jsonl"
    workspace.write_config(site_config(site, jsonl_channel(alerts_file, '["new"]')))
    check_ok(workspace)
    fresh = site.replica_en.publish(title="A working meeting on peacekeeping was held in Dushanbe")

    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_SCRIPT, str(workspace.config)],
        cwd=workspace.path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert crashed.returncode == 0, crashed.stderr[-3000:]
    assert json.loads(crashed.stdout.splitlines()[-1])["new"] == 1
    assert [row["status"] for row in alert_rows(workspace)] == ["pending"]
    assert read_jsonl(alerts_file) == []

    check_ok(workspace)
    check_ok(workspace)

    url = stored_article(workspace, fresh)["url"]
    assert [line["url"] for line in read_jsonl(alerts_file)] == [url]
    assert [row["status"] for row in alert_rows(workspace)] == ["sent"]


def test_overlapping_checks_do_not_corrupt_the_database_or_duplicate_alerts(site, workspace):
    alerts_file = workspace.path / "alerts.jsonl"
    workspace.write_config(site_config(site, jsonl_channel(alerts_file, '["new"]')))
    check_ok(workspace)
    site.replica_en.publish(title="Talks on border security in Central Asia were held in Astana")
    # The first listing request hangs longer than a second check waits for the lock (5 s).
    site.replica_en.faults.add(path="/news/", exact=True, kind="delay", seconds=6, times=1)

    command = [sys.executable, "-m", "monitor", "--config", str(workspace.config), "check"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    runs = [
        subprocess.Popen(
            command,
            cwd=workspace.path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = [(run.wait(timeout=120), run.communicate()[1]) for run in runs]

    assert sorted(code for code, _ in outcomes) in ([0, 0], [0, 1])
    for code, stderr in outcomes:
        if code == 1:
            assert "another crawl or check is running" in stderr
    assert integrity(workspace.database) == "ok"
    lines = read_jsonl(alerts_file)
    assert len(lines) == 1
    assert len(alert_rows(workspace)) == 1
