"""`newsmon browse`: real Datasette over a real archive, in-process and as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import feedparser
import pytest

from monitor.browse import base_url, load_metadata, make_datasette
from storage.archive import Archive
from tests.test_search import has_phrase, has_words, make_corpus

OLD = "2020-01-01T00:00:00+00:00"


@pytest.fixture
def corpus() -> list[dict[str, Any]]:
    articles = make_corpus(60)
    articles[2]["title"] = '<script>alert("title")</script> Afghanistan & co'
    articles[4]["url"] = "javascript:alert(1)"  # never rendered as a link
    return articles


@pytest.fixture
def db_path(tmp_path: Path, corpus: list[dict[str, Any]]) -> Path:
    """The corpus stored a long time ago, plus one article new this week and one edit."""
    path = tmp_path / "archive.db"  # not newsmon.db: browse serves it as "newsmon" anyway
    with Archive(path) as archive:
        for article in corpus:
            archive.store_article(article, now=OLD)
        fresh = {**make_corpus(1, seed=99)[0], "url": "https://news.example.org/fresh"}
        archive.store_article(fresh)
        edited = {**corpus[6], "title": "Edited title", "content_hash": "second-version"}
        assert archive.store_article(edited) == "updated"
        alerts = archive.db["alerts"]
        for index, status in enumerate(["pending", "failed", "sent"]):
            payload = {"title": f"alert {status}", "url": f"https://news.example.org/item/{index}"}
            alerts.insert(
                {
                    "alert_id": f"a{index}",
                    "event": "new",
                    "source": "alpha",
                    "article_id": index + 1,
                    "channel": "log",
                    "status": status,
                    "created_at": OLD,
                    "payload": json.dumps(payload),
                }
            )
    corpus[6] = edited
    corpus.append(fresh)
    return path


def get(datasette: Any, path: str) -> Any:
    async def fetch() -> Any:
        return await datasette.client.get(path)

    return asyncio.run(fetch())


# -- in-process, through Datasette's internal client ----------------------------------------


def test_full_text_search_through_the_json_api(db_path, corpus):
    datasette = make_datasette(db_path)
    for query, expected in [
        ("afghanistan", [a for a in corpus if has_words(a, "afghanistan")]),
        ("minsk peace", [a for a in corpus if has_words(a, "minsk", "peace")]),
    ]:
        response = get(
            datasette, f"/newsmon/articles.json?_search={query}&_shape=objects&_size=max"
        )
        assert response.status_code == 200
        data = response.json()
        assert data["filtered_table_rows_count"] == len(expected) > 0
        assert {row["url"] for row in data["rows"]} == {a["url"] for a in expected}
    phrase = [a for a in corpus if has_phrase(a, "collective security")]
    raw = get(
        datasette,
        '/newsmon/articles.json?_search="collective security"&_searchmode=raw&_shape=objects',
    ).json()
    assert raw["filtered_table_rows_count"] == len(phrase)


def test_facets_from_metadata(db_path, corpus):
    datasette = make_datasette(db_path)
    data = get(datasette, "/newsmon/articles.json?_size=0").json()
    facets = data["facet_results"]
    assert {facet["name"] for facet in facets.values()} >= {
        "source",
        "section",
        "language",
        "published",
    }
    sources = {v["value"]: v["count"] for v in facets["source"]["results"]}
    assert sources == dict(Counter(a["source"] for a in corpus))
    months = {v["value"]: v["count"] for v in facets["published"]["results"]}
    assert facets["published"]["type"] == "month"
    assert months == dict(Counter(a["published"][:7] for a in corpus if a["published"]))
    month = next(iter(months))
    selected = get(datasette, f"/newsmon/articles.json?published__startswith={month}&_size=0")
    assert selected.json()["filtered_table_rows_count"] == months[month]


def test_canned_queries(db_path, corpus):
    datasette = make_datasette(db_path)

    def rows(name: str) -> list[dict[str, Any]]:
        response = get(datasette, f"/newsmon/{name}.json?_shape=objects")
        assert response.status_code == 200, response.text
        return response.json()["rows"]

    assert set(load_metadata()["databases"]["newsmon"]["queries"]) == {
        "latest_articles",
        "new_this_week",
        "edited_articles",
        "pending_or_failed_alerts",
    }
    latest = rows("latest_articles")
    assert len(latest) == min(100, len(corpus))
    dates = [row["published"] or "" for row in latest if row["published"]]
    assert dates == sorted(dates, reverse=True)

    # the edited article changed this week but was first seen long ago: not new
    assert {row["url"] for row in rows("new_this_week")} == {"https://news.example.org/fresh"}

    edited = rows("edited_articles")
    assert {row["url"] for row in edited} == {corpus[6]["url"]}
    assert [row["revision_title"] for row in edited] == [
        make_corpus(60)[6]["title"],
        "Edited title",
    ]

    alerts = rows("pending_or_failed_alerts")
    assert [row["status"] for row in alerts] == ["failed", "pending"]
    assert all(row["title"].startswith("alert ") for row in alerts)


def test_titles_link_to_the_original_page_escaped(db_path, corpus):
    datasette = make_datasette(db_path)
    html = get(datasette, "/newsmon/articles?_search=afghanistan&_size=max").text
    assert "&lt;script&gt;alert(&#34;title&#34;)&lt;/script&gt; Afghanistan &amp; co</a>" in html
    assert '<script>alert("title")' not in html
    link = re.search(r'<a href="([^"]+)" rel="noopener noreferrer">&lt;script', html)
    assert link and link.group(1) == corpus[2]["url"]
    everything = get(datasette, "/newsmon/articles?_size=max").text
    assert 'href="javascript:' not in everything
    query_page = get(datasette, "/newsmon/latest_articles").text
    assert f'<a href="{corpus[2]["url"]}" rel="noopener noreferrer">' in query_page


def test_live_feed_route(db_path, corpus):
    datasette = make_datasette(db_path)
    response = get(datasette, "/-/feed.atom")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/atom+xml")
    parsed = feedparser.parse(response.content)
    assert not parsed.bozo and len(parsed.entries) == 50
    assert parsed.entries[0].id == "https://news.example.org/fresh"  # undated, seen now: newest
    assert any(link.get("rel") == "self" for link in parsed.feed.links)

    matching = [a for a in corpus if has_words(a, "minsk") and a["source"] == "beta"]
    rss = get(datasette, "/-/feed.rss?q=minsk&source=beta&limit=500")
    assert rss.status_code == 200
    parsed = feedparser.parse(rss.content)
    assert parsed.version == "rss20"
    assert {e.id for e in parsed.entries} == {a["url"] for a in matching}

    assert get(datasette, '/-/feed.atom?q="').status_code == 400
    assert get(datasette, "/-/feed.atom?limit=0").status_code == 400
    assert get(datasette, "/-/feed.atom?limit=x").status_code == 400

    async def conditional() -> Any:
        return await datasette.client.get(
            "/-/feed.atom", headers={"If-None-Match": response.headers["etag"]}
        )

    assert asyncio.run(conditional()).status_code == 304


def test_datasette_reads_read_only_and_never_blocks_a_writer(db_path):
    datasette = make_datasette(db_path)
    database = datasette.get_database("newsmon")
    assert database.is_mutable  # not immutable: it sees new rows as they come

    def try_write(conn: sqlite3.Connection) -> str:
        try:
            conn.execute("create table intruder (x)")
        except sqlite3.OperationalError as exc:
            return str(exc)
        return "written"

    async def scenario() -> tuple[str, int, int]:
        refused = await database.execute_fn(try_write)
        before = (await datasette.client.get("/newsmon/articles.json?_size=0")).json()
        # a crawl writes while Datasette holds its read connection open
        started = time.monotonic()
        with Archive(db_path, busy_timeout_ms=2000) as archive:
            new = {**make_corpus(1, seed=5)[0], "url": "https://news.example.org/while-browsing"}
            assert archive.store_article(new) == "new"
        assert time.monotonic() - started < 2
        after = (await datasette.client.get("/newsmon/articles.json?_size=0")).json()
        return refused, before["filtered_table_rows_count"], after["filtered_table_rows_count"]

    refused, before, after = asyncio.run(scenario())
    assert "readonly" in refused
    assert after == before + 1


def test_base_url():
    assert base_url("127.0.0.1", 8001) == "http://127.0.0.1:8001/"
    assert base_url("::1", 80) == "http://[::1]:80/"
    assert base_url("0.0.0.0", 5) == "http://127.0.0.1:5/"


# -- the real command --------------------------------------------------------------------------


def browse_command(db_path: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "monitor", "--db", str(db_path), "browse", "--no-open", *args]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read()


def wait_until_up(url: str, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"browse exited early: {process.communicate()}")
        try:
            fetch(url)
            return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.2)
    raise AssertionError(f"{url} did not answer within {timeout}s")


def test_browse_subprocess_serves_the_json_api_on_localhost(db_path, corpus):
    port = free_port()
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    process = subprocess.Popen(
        browse_command(db_path, "--port", str(port)),
        cwd=db_path.parent,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, process)
        status, body = fetch(
            url + "newsmon/articles.json?_search=afghanistan&_shape=objects&_size=max"
        )
        assert status == 200
        data = json.loads(body)
        assert data["filtered_table_rows_count"] == sum(has_words(a, "afghanistan") for a in corpus)
        status, body = fetch(url + "-/feed.atom")
        assert status == 200 and len(feedparser.parse(body).entries) == 50
        # a crawl writes while browse runs, and browse shows it
        with Archive(db_path) as archive:
            fresh = {
                **make_corpus(1, seed=3)[0],
                "url": "https://news.example.org/live",
                "title": "Zanzibar",
            }
            assert archive.store_article(fresh) == "new"
        status, body = fetch(url + "newsmon/articles.json?_search=zanzibar")
        assert json.loads(body)["filtered_table_rows_count"] == 1
    finally:
        process.terminate()
        stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert url in stdout and f"{url}-/feed.atom" in stdout
    assert "Traceback" not in stderr
    with pytest.raises(OSError):  # bound to localhost, and released on exit
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_browse_reports_a_busy_port_in_one_line(db_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            browse_command(db_path, "--port", str(port)),
            capture_output=True,
            text=True,
            timeout=60,
            cwd=db_path.parent,
        )
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "cannot listen" in result.stderr


def test_browse_without_an_archive_exits_2(tmp_path):
    result = subprocess.run(
        browse_command(tmp_path / "none.db"),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert result.returncode == 2 and "no archive" in result.stderr
    assert not (tmp_path / "none.db").exists()
