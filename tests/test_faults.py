"""HTTP faults and bad content, injected into the real replica, seen through the real CLI.

Retry-After and backoff waits are measured on the replica's side: the fixture timestamps every
request the English section logs, so the gap between a 503 and its retry is what the site saw.
"""

from __future__ import annotations

import gzip
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest
from scrapy.exceptions import NotConfigured
from scrapy.http import Request, Response
from scrapy.settings import Settings

import monitor.replica as replica_module
from monitor.replica import PDF, Article, ReplicaServer
from scraper.middlewares import RetryAfterMiddleware, parse_retry_after
from tests.conftest import FAST_SETTINGS, Workspace, replica_config, source_block, wait_for

LISTING = "/news/"


@dataclass
class Stamp:
    at: float  # time.monotonic()
    wall: float  # time.time(), to compare with an HTTP date
    method: str
    target: str
    status: int


@pytest.fixture
def site(replica: ReplicaServer) -> Iterator[ReplicaServer]:
    """The shared replica, with a monotonic timestamp on each request of the English section."""
    rep = replica.replica_en
    stamps: list[Stamp] = []
    logged = rep.log_request

    def log_request(method: str, target: str, status: int) -> None:
        stamps.append(Stamp(time.monotonic(), time.time(), method, target, status))
        logged(method, target, status)

    rep.log_request = log_request  # type: ignore[method-assign]
    replica.stamps = stamps  # type: ignore[attr-defined]
    yield replica


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]
    elapsed: float

    @property
    def report(self) -> dict[str, Any]:
        return json.loads(self.result.stdout)

    def source(self, name: str) -> dict[str, Any]:
        return next(s for s in self.report["sources"] if s["source"] == name)


def crawl(workspace: Workspace, *settings: str, verbose: bool = False, timeout: float = 120) -> Run:
    """`newsmon [-v] crawl --json -s NAME=VALUE ...`, timed around the whole subprocess."""
    args = [arg for setting in settings for arg in ("-s", setting)]
    started = time.monotonic()
    result = workspace.run(*(["-v"] if verbose else []), "crawl", "--json", *args, timeout=timeout)
    return Run(result, time.monotonic() - started)


def expected_total(server: ReplicaServer) -> int:
    return len(server.replica_en.articles()) + len(server.replica_ru.articles())


def stored_slugs(workspace: Workspace, source: str = "csto-en") -> set[str]:
    """Slugs stored for one source (the Russian section reuses the English slugs)."""
    rows = workspace.db().query("select url from articles where source = ?", [source])
    return {row["url"].rstrip("/").rsplit("/", 1)[-1] for row in rows}


def stored_row(workspace: Workspace, article: Article) -> dict[str, Any]:
    sql = "select * from articles where source = 'csto-en' and url like ?"
    rows = list(workspace.db().query(sql, [f"%/{article.slug}/"]))
    assert len(rows) == 1, rows
    return rows[0]


def article_path(article: Article) -> str:
    return f"/news/news_odkb/{article.slug}/"


def listing_stamps(server: ReplicaServer) -> list[Stamp]:
    return [s for s in server.stamps if s.target == LISTING]  # type: ignore[attr-defined]


def gaps(stamps: list[Stamp]) -> list[float]:
    return [later.at - earlier.at for earlier, later in zip(stamps, stamps[1:], strict=False)]


def assert_clean_stderr(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "Spider error" not in result.stderr, result.stderr[-3000:]


# -- the middleware's arithmetic -------------------------------------------------------------


def test_retry_after_values_are_read_as_seconds_or_http_dates():
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(b" 120 ") == 120.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now=now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now=now) == 0.0  # in the past
    for unreadable in (None, "", "soon", "-5", "1.5", "Thu, 99 Foo 2026"):
        assert parse_retry_after(unreadable, now=now) is None, unreadable


def test_backoff_doubles_and_is_capped_and_retry_after_is_capped():
    settings = Settings({"RETRY_BACKOFF_BASE": 1.0, "RETRY_AFTER_MAX": 10, "RETRY_TIMES": 9})
    middleware = RetryAfterMiddleware(settings)
    assert [middleware.backoff(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    request = Request("http://127.0.0.1/news/")
    asked = Response(request.url, status=503, headers={"Retry-After": "3"}, request=request)
    assert middleware.response_delay(asked, 1) == (3.0, "Retry-After")
    huge = Response(request.url, status=429, headers={"Retry-After": "3600"}, request=request)
    assert middleware.response_delay(huge, 1)[0] == 10
    plain = Response(request.url, status=502, headers={"Retry-After": "3"}, request=request)
    assert middleware.response_delay(plain, 3) == (4.0, "backoff")  # only 429/503 ask
    assert RetryAfterMiddleware(Settings({"RETRY_BACKOFF_BASE": 0})).backoff(5) == 0


def test_middleware_is_off_when_retries_are_off():
    with pytest.raises(NotConfigured):
        RetryAfterMiddleware(Settings({"RETRY_ENABLED": False}))


# -- Retry-After and backoff ------------------------------------------------------------------


def test_listing_503_twice_with_retry_after_2_is_fetched_after_waiting(site, workspace):
    workspace.write_config(replica_config(site))
    site.replica_en.faults.add(
        path=LISTING, exact=True, kind="status", code=503, retry_after=2, times=2
    )

    run = crawl(
        workspace, "RETRY_TIMES=3", "RETRY_AFTER_MAX=120", "RETRY_BACKOFF_BASE=0", verbose=True
    )

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    listing = listing_stamps(site)
    assert [s.status for s in listing] == [503, 503, 200]
    waits = gaps(listing)
    assert all(wait >= 1.9 for wait in waits), waits
    assert all(wait < 10 for wait in waits), waits
    assert run.elapsed >= 4.0
    assert run.source("csto-en")["status"] == "ok"
    assert run.report["errors"] == 0
    assert run.report["new"] == expected_total(site)
    assert workspace.db()["articles"].count == expected_total(site)
    assert "in 2.0 s (HTTP 503, Retry-After)" in run.result.stderr  # -v explains the wait
    assert_clean_stderr(run.result)


def test_retry_after_on_one_page_holds_every_request_to_the_site(site, workspace):
    workspace.write_config(replica_config(site))
    page = article_path(site.replica_en.listing(1)[2][2])
    site.replica_en.faults.add(path=page, kind="status", code=503, retry_after=2, times=1)

    run = crawl(workspace, "RETRY_TIMES=2", "RETRY_BACKOFF_BASE=0")

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    refused = next(s for s in site.stamps if s.status == 503)
    # Requests already on their way when the 503 came are answered within a moment of it.
    held = [s for s in site.stamps if refused.at + 0.3 < s.at < refused.at + 1.8]
    assert held == [], held
    retried = [s for s in site.stamps if s.target == page]
    assert [s.status for s in retried] == [503, 200] and retried[1].at - refused.at >= 1.9
    assert any(s.target != page and s.at > refused.at + 1.9 for s in site.stamps)  # were held
    assert workspace.db()["articles"].count == expected_total(site)


def test_a_stop_during_a_retry_after_hold_ends_the_crawl_without_waiting_it_out(site, workspace):
    workspace.write_config(replica_config(site))
    page = article_path(site.replica_en.listing(1)[2][2])
    site.replica_en.faults.add(path=page, kind="status", code=503, retry_after=60, times=1)
    crawl_process = workspace.start("crawl")
    try:
        wait_for(lambda: any(s.status == 503 for s in site.stamps), 60, "the 503", every=0.05)
        time.sleep(0.5)  # the hold is on
        stopped = time.monotonic()
        crawl_process.send_signal(signal.SIGTERM)
        crawl_process.wait(timeout=30)
    finally:
        if crawl_process.poll() is None:
            crawl_process.kill()
        _, err = crawl_process.communicate()

    assert time.monotonic() - stopped < 10, err[-3000:]
    assert "Traceback" not in err, err[-3000:]


def test_retry_after_as_an_http_date_is_honoured(site, workspace):
    workspace.write_config(replica_config(site))
    until = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=7)
    site.replica_en.faults.add(
        path=LISTING,
        exact=True,
        kind="status",
        code=503,
        retry_after=format_datetime(until, usegmt=True),
        times=1,
    )

    run = crawl(workspace, "RETRY_TIMES=2", "RETRY_BACKOFF_BASE=0")

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    listing = listing_stamps(site)
    assert [s.status for s in listing] == [503, 200]
    # What was left of the wait when the 503 went out (the crawler takes a moment to start).
    asked = until.timestamp() - listing[0].wall
    assert asked >= 2, "the crawler started too slowly for this test to measure anything"
    assert asked - 0.5 <= gaps(listing)[0] < asked + 3, (asked, gaps(listing))
    assert listing[1].wall >= until.timestamp() - 0.5
    assert workspace.db()["articles"].count == expected_total(site)


def test_429_retry_after_beyond_the_cap_waits_only_the_cap(site, workspace):
    workspace.write_config(replica_config(site))
    site.replica_en.faults.add(
        path=LISTING, exact=True, kind="status", code=429, retry_after=3600, times=1
    )

    run = crawl(workspace, "RETRY_TIMES=2", "RETRY_AFTER_MAX=1.5", "RETRY_BACKOFF_BASE=0")

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    listing = listing_stamps(site)
    assert [s.status for s in listing] == [429, 200]
    assert 1.4 <= gaps(listing)[0] < 6, gaps(listing)
    assert run.elapsed < 60
    assert workspace.db()["articles"].count == expected_total(site)


def test_5xx_is_retried_with_exponential_backoff(site, workspace):
    workspace.write_config(replica_config(site))
    site.replica_en.faults.add(path=LISTING, exact=True, kind="status", code=500, times=2)

    run = crawl(workspace, "RETRY_TIMES=3", "RETRY_BACKOFF_BASE=0.6", "RETRY_AFTER_MAX=30")

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    listing = listing_stamps(site)
    assert [s.status for s in listing] == [500, 500, 200]
    first, second = gaps(listing)
    assert 0.55 <= first < 5 and 1.15 <= second < 6, (first, second)
    assert workspace.db()["articles"].count == expected_total(site)


def test_backoff_is_capped_by_retry_after_max(site, workspace):
    workspace.write_config(replica_config(site))
    site.replica_en.faults.add(path=LISTING, exact=True, kind="status", code=502, times=1)

    run = crawl(workspace, "RETRY_TIMES=1", "RETRY_BACKOFF_BASE=60", "RETRY_AFTER_MAX=1")

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    listing = listing_stamps(site)
    assert [s.status for s in listing] == [502, 200]
    assert 0.9 <= gaps(listing)[0] < 6
    assert run.elapsed < 60


def test_listing_still_503_after_the_retries_fails_the_source_not_the_others(site, workspace):
    workspace.write_config(replica_config(site))
    site.replica_en.faults.add(path=LISTING, exact=True, kind="status", code=503, retry_after=1)

    run = crawl(workspace, "RETRY_TIMES=2", "RETRY_BACKOFF_BASE=0")

    assert run.result.returncode == 1
    assert [s.status for s in listing_stamps(site)] == [503, 503, 503]  # RETRY_TIMES bounds it
    assert run.source("csto-en")["status"] == "failed"
    assert run.source("csto-ru")["status"] == "ok"
    assert workspace.db()["articles"].count == len(site.replica_ru.articles())
    runs = {row["source"]: row for row in workspace.db().query("select * from crawl_runs")}
    assert runs["csto-en"]["status"] == "failed" and runs["csto-en"]["errors"] >= 1
    assert "503" in (runs["csto-en"]["message"] or "")
    assert_clean_stderr(run.result)


def test_article_timeout_is_retried_and_the_article_stored(site, workspace):
    workspace.write_config(replica_config(site))
    slow = site.replica_en.article(7)
    site.replica_en.faults.add(path=article_path(slow), kind="delay", seconds=8, times=1)

    run = crawl(workspace, "RETRY_TIMES=3", "DOWNLOAD_TIMEOUT=3", "RETRY_BACKOFF_BASE=0.2")

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert run.report["errors"] == 0
    assert slow.slug in stored_slugs(workspace)
    assert workspace.db()["articles"].count == expected_total(site)


# -- bad content ------------------------------------------------------------------------------


def test_truncated_article_page_does_not_stop_the_rest(site, workspace):
    workspace.write_config(replica_config(site))
    cut = site.replica_en.article(9)
    site.replica_en.faults.add(path=article_path(cut), kind="truncate", bytes=500)

    run = crawl(workspace, "RETRY_TIMES=1", "RETRY_BACKOFF_BASE=0")

    # An article that fails is an error of the run, not a failed source: exit 0 (see cli.py).
    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert run.source("csto-en")["status"] == "ok"
    assert run.source("csto-en")["errors"] >= 1
    stored = stored_slugs(workspace)
    assert cut.slug not in stored
    assert workspace.db()["articles"].count == expected_total(site) - 1
    hits = [s for s in site.stamps if s.target == article_path(cut)]
    assert len(hits) == 2  # first try and one retry (RETRY_TIMES=1)
    assert article_path(cut) in run.result.stderr
    assert_clean_stderr(run.result)

    # The next crawl fetches it again once the page is whole.
    site.replica_en.faults.clear()
    again = crawl(workspace)
    assert again.result.returncode == 0, again.result.stderr[-3000:]
    assert cut.slug in stored_slugs(workspace)
    assert workspace.db()["articles"].count == expected_total(site)


BAD_CONTENT = {
    "garbage": {"kind": "garbage", "bytes": 4096},
    "empty": {"kind": "empty"},
    "oversize": {"kind": "oversize", "bytes": 3_000_000},
    "json": {"kind": "content_type", "content_type": "application/json"},
    "redirect-offsite": {"kind": "redirect", "location": "http://example.invalid/news/x/"},
}


@pytest.mark.parametrize("fault", list(BAD_CONTENT), ids=list(BAD_CONTENT))
def test_bad_article_page_is_an_error_and_the_rest_is_stored(site, workspace, fault):
    workspace.write_config(replica_config(site))
    bad = site.replica_en.article(9)
    site.replica_en.faults.add(path=article_path(bad), **BAD_CONTENT[fault])

    run = crawl(workspace, "RETRY_TIMES=1", "RETRY_BACKOFF_BASE=0", "DOWNLOAD_MAXSIZE=1000000")

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert run.source("csto-en")["errors"] == 1, run.result.stderr[-3000:]
    assert run.source("csto-ru")["errors"] == 0
    stored = stored_slugs(workspace)
    assert bad.slug not in stored, "a page with no article must not be stored"
    assert workspace.db()["articles"].count == expected_total(site) - 1
    assert article_path(bad) in run.result.stderr  # logged with its URL
    assert_clean_stderr(run.result)


def _serve_instead(monkeypatch, path: str, make: Any) -> None:
    """Answer `path` with make(original response): the replica server runs in this process."""
    original = replica_module.route

    def route(rep, prefix, target, site, hostile=False):
        resp = original(rep, prefix, target, site, hostile=hostile)
        return make(resp) if target.split("?")[0] == path else resp

    monkeypatch.setattr(replica_module, "route", route)


def test_non_html_article_body_is_an_error(site, workspace, monkeypatch):
    workspace.write_config(replica_config(site))
    pdf = site.replica_en.article(9)
    _serve_instead(
        monkeypatch,
        article_path(pdf),
        lambda _: replica_module.Response(200, PDF, "application/pdf"),
    )

    run = crawl(workspace)

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert run.source("csto-en")["errors"] == 1
    assert pdf.slug not in stored_slugs(workspace)
    assert workspace.db()["articles"].count == expected_total(site) - 1
    assert article_path(pdf) in run.result.stderr
    assert_clean_stderr(run.result)


@pytest.mark.parametrize("encoding", ["identity", "gzip", "utf-16"])
def test_an_article_page_that_refreshes_to_another_site_is_an_error(
    site, workspace, monkeypatch, encoding
):
    workspace.write_config(replica_config(site))
    moved = site.replica_en.article(9)
    page = (
        b"<html><head><meta http-equiv='refresh' content='0; url=http://example.invalid/news/x/'>"
        b"</head><body>Moved.</body></html>"
    )
    headers, charset = {}, "utf-8"
    if encoding == "gzip":  # as most servers send it: read only once decompressed
        page, headers = gzip.compress(page), {"Content-Encoding": "gzip"}
    elif encoding == "utf-16":  # no ASCII "refresh" among its bytes
        page, charset = page.decode().encode("utf-16"), "utf-16"
    _serve_instead(
        monkeypatch,
        article_path(moved),
        lambda _: replica_module.Response(200, page, f"text/html; charset={charset}", headers),
    )

    run = crawl(workspace)

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert run.source("csto-en")["errors"] == 1, run.result.stderr[-3000:]
    assert moved.slug not in stored_slugs(workspace)
    assert "example.invalid" in run.result.stderr  # logged with where it led
    assert_clean_stderr(run.result)


def test_an_article_page_that_refreshes_to_a_page_on_the_same_site_is_followed(
    site, workspace, monkeypatch
):
    workspace.write_config(replica_config(site))
    moved = site.replica_en.article(9)
    old_path, new_path = article_path(moved), f"/news/news_odkb/{moved.slug}-moved/"
    page = f"<html><head><META HTTP-EQUIV='Refresh' CONTENT='0; URL={new_path}'></head></html>"
    original = replica_module.route

    def route(rep, prefix, target, site, hostile=False):
        path = target.split("?")[0]
        if path == old_path:
            return replica_module.Response(200, page.encode(), "text/html; charset=utf-8")
        if path == new_path:  # the article, at its new address
            return original(rep, prefix, old_path, site, hostile=hostile)
        return original(rep, prefix, target, site, hostile=hostile)

    monkeypatch.setattr(replica_module, "route", route)

    run = crawl(workspace)

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert run.source("csto-en")["errors"] == 0, run.result.stderr[-3000:]
    assert new_path in {s.target for s in site.stamps}
    assert workspace.db()["articles"].count == expected_total(site)
    assert_clean_stderr(run.result)


def test_broken_html_is_still_read(site, workspace, monkeypatch):
    workspace.write_config(replica_config(site))
    broken = site.replica_en.article(11)

    def mangle(resp):
        text = resp.body.decode()
        text = re.sub(r"</(div|p|span|body|html)>", "", text)  # nothing is ever closed
        text = text.replace("<main>", "<main></td></tr><<>><div class='x' <span>")
        return replica_module.Response(200, text.encode(), resp.content_type)

    _serve_instead(monkeypatch, article_path(broken), mangle)

    run = crawl(workspace)

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert run.report["errors"] == 0
    row = stored_row(workspace, broken)
    assert row["title"] == broken.title
    assert broken.paragraphs[0][:40] in row["body"]
    assert workspace.db()["articles"].count == expected_total(site)


def test_article_without_any_title_is_an_error_and_not_stored(site, workspace, monkeypatch):
    workspace.write_config(replica_config(site))
    site.replica_en.edit(5, title="")  # no title in the listing either
    untitled = site.replica_en.article(5)
    page = (
        '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body><div class="news-detail">'
        '<span class="news-date-time">01.04.2024</span><div class="news-detail-text">'
        "<p>A body with no title anywhere on the page.</p></div></div></body></html>"
    )
    _serve_instead(
        monkeypatch, article_path(untitled), lambda _: replica_module.Response(200, page.encode())
    )

    run = crawl(workspace)

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert run.source("csto-en")["errors"] == 1
    assert untitled.slug not in stored_slugs(workspace)
    assert workspace.db()["articles"].count == expected_total(site) - 1
    assert untitled.slug in run.result.stderr
    assert_clean_stderr(run.result)


def test_redirect_on_the_same_site_is_followed(site, workspace):
    workspace.write_config(replica_config(site))
    moved = site.replica_en.article(9)
    site.replica_en.faults.add(
        path=article_path(moved),
        exact=True,
        kind="redirect",
        code=301,
        location=article_path(moved) + "?moved=1",
    )

    run = crawl(workspace)

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    assert run.report["errors"] == 0
    assert [s.status for s in site.stamps if s.target.startswith(article_path(moved))] == [
        301,
        200,
    ]
    assert moved.slug in stored_slugs(workspace)
    assert workspace.db()["articles"].count == expected_total(site)


def test_listing_page_redirected_off_site_is_refused_and_counted(site, workspace):
    """Page 1 has dont_filter, which lets Scrapy's OffsiteMiddleware follow any redirect."""
    workspace.write_config(replica_config(site))
    site.replica_en.faults.add(
        path=LISTING, exact=True, kind="redirect", location="http://example.invalid/news/"
    )

    run = crawl(workspace, "RETRY_TIMES=0")

    assert run.result.returncode == 1
    assert run.source("csto-en")["status"] == "failed"
    assert run.source("csto-en")["errors"] == 1
    assert "example.invalid" in run.result.stderr
    assert workspace.db()["articles"].count == len(site.replica_ru.articles())
    assert_clean_stderr(run.result)


# -- hostile content --------------------------------------------------------------------------


def test_hostile_title_is_stored_as_text_and_printed_without_escapes(site, workspace):
    workspace.write_config(replica_config(site))
    target = site.replica_en.article(12)
    site.replica_en.faults.add(path=article_path(target), kind="hostile")

    run = crawl(workspace)

    assert run.result.returncode == 0, run.result.stderr[-3000:]
    row = stored_row(workspace, target)
    assert "<script>alert(1)</script>" in row["title"]  # data, kept as text
    assert "javascript:alert(1)" in row["title"]
    assert "\x1b" not in run.result.stdout

    listed = workspace.run("list", "--limit", "100")
    assert listed.returncode == 0, listed.stderr
    assert "\x1b" not in listed.stdout
    assert "RED" in listed.stdout and "<script>alert(1)</script>" in listed.stdout
    shown = workspace.run("show", str(row["id"]))
    assert shown.returncode == 0, shown.stderr
    assert "\x1b" not in shown.stdout
    assert "\x1b" not in run.result.stderr + listed.stderr + shown.stderr


# -- revisits: a bad answer to a stored article raises nothing false --------------------------


@pytest.mark.parametrize("fault", ["empty", "garbage"])
def test_bad_answer_on_revisit_neither_blanks_the_article_nor_alerts(site, workspace, fault):
    alerts_file = workspace.path / "alerts.jsonl"
    channel = f'\n[[alerts]]\ntype = "jsonl"\npath = "{alerts_file}"\n'
    source = source_block("csto-en", site.en_url).replace(
        'language = "en"\n', 'language = "en"\nrevisit_days = 100000\nrevisit_every = "0s"\n'
    )
    workspace.write_config('database = "newsmon.db"\n' + channel + source + FAST_SETTINGS)
    first = workspace.run("check")
    assert first.returncode == 0, first.stderr[-3000:]
    target = site.replica_en.article(9)
    before = stored_row(workspace, target)
    site.replica_en.faults.add(path=article_path(target), kind=fault)

    second = workspace.run("check", "--json")

    assert second.returncode == 0, second.stderr[-3000:]
    report = json.loads(second.stdout)
    assert report["updated"] == 0 and report["removed"] == 0 and report["new"] == 0
    assert report["errors"] == 1
    after = stored_row(workspace, target)
    assert (after["title"], after["body"]) == (before["title"], before["body"])
    events = (
        [json.loads(line)["event"] for line in alerts_file.read_text().splitlines()]
        if (alerts_file.exists())
        else []
    )
    assert "updated" not in events and "removed" not in events and "new" not in events


def test_article_failed_on_a_deep_page_is_fetched_directly_by_the_next_check(site, workspace):
    workspace.write_config(replica_config(site))
    deep = site.replica_en.article(2)  # on the last listing page
    site.replica_en.faults.add(path=article_path(deep), kind="status", code=500)
    first = crawl(workspace, "RETRY_TIMES=0")
    assert deep.slug not in stored_slugs(workspace), first.result.stderr[-3000:]
    site.replica_en.faults.clear()
    site.stamps.clear()

    check = workspace.run("check", "--json", "-s", "RETRY_TIMES=0")

    assert check.returncode == 0, check.stderr[-3000:]
    assert deep.slug in stored_slugs(workspace)
    listing_pages = [s.target for s in site.stamps if "PAGEN_1" in s.target]
    assert listing_pages == []  # found without walking the listing again
    failed = list(workspace.db().query("select * from failed_articles"))
    assert failed == []


@pytest.mark.parametrize(
    ("target", "outcome"),
    [
        ("http://elsewhere.test/x/", "refused"),
        ("http://csto.test/b/", "followed"),
        ("http://[x/", "scrapy's"),  # unparseable: Scrapy's own check fails the request
    ],
)
def test_a_meta_refresh_is_refused_only_when_it_leads_off_site(target, outcome):
    from scrapy import Spider
    from scrapy.http import HtmlResponse
    from scrapy.utils.test import get_crawler

    from scraper.middlewares import OffsiteMetaRefreshMiddleware, OffsiteRedirect

    class Site(Spider):
        name = "site"
        allowed_domains = ["csto.test"]

    crawler = get_crawler(Site)
    crawler.spider = Site()
    middleware = OffsiteMetaRefreshMiddleware.from_crawler(crawler)
    request = Request("http://csto.test/a/")
    page = f"<html><head><meta http-equiv='refresh' content='0; url={target}'></head></html>"
    response = HtmlResponse(request.url, body=page.encode(), request=request)
    if outcome == "refused":
        with pytest.raises(OffsiteRedirect):
            middleware.process_response(request, response)
    elif outcome == "followed":
        assert middleware.process_response(request, response).url == target
    else:
        with pytest.raises(ValueError):  # not OffsiteRedirect
            middleware.process_response(request, response)


@pytest.mark.parametrize(
    ("page", "may"),
    [
        (b"<html><head><title>News</title></head><body>No tag here.</body></html>", False),
        (b"<html><head><META HTTP-EQUIV='Refresh' CONTENT='0; url=/b/'></head></html>", True),
        ("<html><head><meta http-equiv='refresh'></head></html>".encode("utf-16"), True),
        ("<html><head><title>Без тега</title></head></html>".encode("utf-16"), True),  # NULs
    ],
    ids=["no-tag", "any-case", "utf-16", "utf-16-no-tag"],
)
def test_only_a_page_whose_bytes_may_hold_a_refresh_is_parsed_for_one(page, may):
    from scrapy.http import HtmlResponse

    from scraper.middlewares import may_refresh

    assert may_refresh(HtmlResponse("http://csto.test/a/", body=page)) is may


@pytest.mark.parametrize(
    ("start", "target", "refused"),
    [
        ("http://www.csto.test/news/", "http://csto.test/news/", False),
        ("http://csto.test/news/", "http://www.csto.test/news/", False),
        ("http://www.csto.test/news/", "http://news.csto.test/news/", False),
        ("http://www.csto.test/news/", "http://csto.test.elsewhere.test/", True),
        ("http://www.csto.test/news/", "http://www.elsewhere.test/", True),
    ],
)
def test_a_redirect_between_www_and_the_bare_host_stays_on_the_site(
    workspace, start, target, refused
):
    from scrapy.http import HtmlResponse
    from scrapy.utils.test import get_crawler

    from monitor.config import load_config
    from scraper.middlewares import OffsiteMetaRefreshMiddleware, OffsiteRedirect
    from scraper.spiders.news import NewsSpider

    config = load_config(
        workspace.write_config(f'database = "newsmon.db"\n{source_block("s", start)}')
    )
    crawler = get_crawler(NewsSpider)
    crawler.spider = NewsSpider.from_crawler(crawler, config=config)
    middleware = OffsiteMetaRefreshMiddleware.from_crawler(crawler)
    request = Request(start)
    page = f"<html><head><meta http-equiv='refresh' content='0; url={target}'></head></html>"
    response = HtmlResponse(start, body=page.encode(), request=request)
    if refused:
        with pytest.raises(OffsiteRedirect):
            middleware.process_response(request, response)
    else:
        assert middleware.process_response(request, response).url == target
