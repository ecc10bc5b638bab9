"""Crash safety: `kill -9` partway through a crawl of a large replica loses nothing stored,
leaves an intact database, and the next crawl completes with every article exactly once.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitor.replica import Replica, ReplicaServer
from tests.conftest import FAST_SETTINGS, Workspace, source_block

ARTICLES, PER_PAGE = 400, 20
ARTICLE_PAGES = "/news/news_odkb/"


@pytest.fixture
def big_site() -> Iterator[ReplicaServer]:
    """400 English articles, 20 per page; every article page answers after 50 ms."""
    server = ReplicaServer(
        Replica(articles=ARTICLES, per_page=PER_PAGE), Replica(articles=3, language="ru")
    )
    with server:
        server.replica_en.faults.add(path=ARTICLE_PAGES, kind="delay", seconds=0.05)
        yield server


def english_only(server: ReplicaServer) -> str:
    return 'database = "newsmon.db"\n' + source_block("csto-en", server.en_url) + FAST_SETTINGS


def start_crawl(workspace: Workspace, *args: str, command: str = "crawl") -> subprocess.Popen[str]:
    return workspace.start(command, *args)


def read_only(database: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)


def stored_count(database: Path) -> int:
    """Articles committed so far, read the way a second process would (read-only)."""
    if not database.exists():
        return 0
    try:
        with read_only(database) as conn:
            return conn.execute("select count(*) from articles").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet, or the schema is being built
        return 0


def kill_when(proc: subprocess.Popen[str], database: Path, at_least: int, timeout: float = 90):
    """SIGKILL the crawl as soon as `at_least` articles are stored; return the count seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the crawl ended before it could be killed:\n{proc.stderr.read()[-3000:]}")
        seen = stored_count(database)
        if seen >= at_least:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
            proc.stderr.close()
            return seen
        time.sleep(0.02)
    proc.kill()
    proc.wait()
    pytest.fail(f"fewer than {at_least} articles stored after {timeout} s")


def integrity(database: Path) -> str:
    with sqlite3.connect(database) as conn:
        return conn.execute("pragma integrity_check").fetchone()[0]


def slugs(database: Path) -> Counter[str]:
    """Stored articles by slug: a URL variant (?sphrase_id=...) must not make a second row."""
    with read_only(database) as conn:
        urls = [row[0] for row in conn.execute("select url from articles")]
    return Counter(url.split("?")[0].rstrip("/").rsplit("/", 1)[-1] for url in urls)


def assert_intact(database: Path) -> None:
    assert integrity(database) == "ok"
    with read_only(database) as conn:
        dupes = conn.execute(
            "select url, count(*) from articles group by url having count(*) > 1"
        ).fetchall()
        revisions = conn.execute(
            "select count(*) from articles a where not exists"
            " (select 1 from revisions r where r.article_id = a.id)"
        ).fetchone()[0]
        fts = conn.execute("select count(*) from articles_fts").fetchone()[0]
        articles = conn.execute("select count(*) from articles").fetchone()[0]
    assert dupes == []
    assert revisions == 0, "an article was committed without its revision"
    assert fts == articles, "the full-text index is out of step with the articles"
    assert max(slugs(database).values(), default=1) == 1


def test_crawl_killed_with_sigkill_then_rerun_stores_every_article_exactly_once(
    big_site, workspace
):
    workspace.write_config(english_only(big_site))
    proc = start_crawl(workspace)

    seen = kill_when(proc, workspace.database, at_least=40)

    assert proc.returncode == -signal.SIGKILL
    assert_intact(workspace.database)
    survived = stored_count(workspace.database)
    assert survived >= seen  # nothing committed was lost
    assert survived < ARTICLES, "the kill came too late to test anything"
    with read_only(workspace.database) as conn:
        statuses = [row[0] for row in conn.execute("select status from crawl_runs")]
    assert statuses == ["running"]  # the killed run is visibly unfinished

    rerun = workspace.run("crawl", "--json", timeout=240)

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_intact(workspace.database)
    counts = slugs(workspace.database)
    expected = {a.slug for a in big_site.replica_en.articles()}
    assert set(counts) == expected
    assert stored_count(workspace.database) == ARTICLES
    assert all(n == 1 for n in counts.values())


def test_check_killed_after_the_newest_page_still_finds_and_alerts_the_older_new_ones(
    workspace,
):
    """The hazard of an incremental walk: it stops at the first page with nothing new.

    After a baseline, 30 articles are published (pages 1 and 2). A check is killed once page
    1's new articles are stored while page 2 is still loading. The next check finds nothing
    new on page 1 and must not conclude that page 2 is known too; and each of the 30 gets
    exactly one `new` alert (those stored by the killed check were enqueued, not delivered).
    """
    alerts_file = workspace.path / "alerts.jsonl"
    channel = f'\n[[alerts]]\ntype = "jsonl"\npath = "{alerts_file}"\nevents = ["new"]\n'
    with ReplicaServer(Replica(articles=100, per_page=PER_PAGE), Replica(articles=3)) as site:
        workspace.write_config(
            english_only(site).replace("\n[[sources]]", channel + "\n[[sources]]", 1)
        )
        baseline = workspace.run("crawl")
        assert baseline.returncode == 0, baseline.stderr[-3000:]
        published = [site.replica_en.publish() for _ in range(30)]
        site.replica_en.faults.add(path="/news/?PAGEN_1=2", exact=True, kind="delay", seconds=60)
        proc = start_crawl(workspace, command="check")

        kill_when(proc, workspace.database, at_least=100 + PER_PAGE)  # page 2 still hanging

        assert_intact(workspace.database)
        assert stored_count(workspace.database) == 100 + PER_PAGE
        assert not alerts_file.exists() or alerts_file.read_text() == ""

        site.replica_en.faults.clear()
        rerun = workspace.run("check", "--json", timeout=240)

    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert_intact(workspace.database)
    assert stored_count(workspace.database) == 130, (
        "the resumed check stopped at page 1 and missed the new articles on page 2"
    )
    lines = [json.loads(line) for line in alerts_file.read_text().splitlines() if line]
    urls = Counter(line["url"].split("?")[0].rstrip("/").rsplit("/", 1)[-1] for line in lines)
    assert set(urls) == {a.slug for a in published}
    assert all(n == 1 for n in urls.values()), urls
