"""Exports (storage.export and `newsmon export`): every format parses and holds every article."""

from __future__ import annotations

import csv
import email.utils
import io
import json
import os
import subprocess
import sys
import tracemalloc
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from typing import Any

import feedparser
import pytest

from storage.archive import Archive
from storage.export import (
    COLUMNS,
    FeedInfo,
    article_rows,
    export,
    write_atom,
    write_csv,
    write_json,
    write_jsonl,
    write_rss,
)
from storage.search import SearchSyntaxError
from tests.test_search import build_archive, has_phrase, has_words, make_corpus

ATOM = "{http://www.w3.org/2005/Atom}"
CONTENT = "{http://purl.org/rss/1.0/modules/content/}"
NASTY_TITLE = '<script>alert("x")</script> & \x1b[31mred\x1b[0m \x1b]0;title\x07 \x00end'


@pytest.fixture
def corpus() -> list[dict[str, Any]]:
    articles = make_corpus(45)
    articles[3]["title"] = NASTY_TITLE
    articles[3]["body"] = "<b>bold?</b> <img src=x onerror=alert(1)>\n\nSecond paragraph."
    articles[5]["attachments"] = ["https://news.example.org/files/report.pdf"]
    articles[7]["published"] = "2024-03-05T14:30:00+03:00"
    return articles


@pytest.fixture
def db_path(tmp_path: Path, corpus: list[dict[str, Any]]) -> Path:
    path = build_archive(tmp_path / "newsmon.db", corpus)
    with Archive(path) as archive:  # an edit: a second revision of article 10
        edited = {**corpus[10], "title": corpus[10]["title"] + " (corrected)", "content_hash": "v2"}
        assert archive.store_article(edited, now="2030-01-02T03:04:05+00:00") == "updated"
    corpus[10] = edited
    return path


def expected_order(path: Path) -> list[str]:
    """Newest first, computed in Python from the stored rows."""
    with Archive(path) as archive:
        rows = list(archive.db.query("select id, url, published, first_seen from articles"))
    rows.sort(key=lambda r: (r["published"] or r["first_seen"][:10], r["id"]), reverse=True)
    return [row["url"] for row in rows]


def run_export(path: Path, fmt: str, **kwargs: Any) -> bytes:
    out = io.BytesIO()
    with Archive(path) as archive:
        export(archive, fmt, out, **kwargs)
    return out.getvalue()


def test_atom_holds_every_article_newest_first(db_path, corpus):
    data = run_export(db_path, "atom", feed=FeedInfo(title="Test feed", id="urn:test:feed"))
    root = ET.fromstring(data)
    assert root.tag == f"{ATOM}feed"
    assert root.findtext(f"{ATOM}id") == "urn:test:feed"
    entries = root.findall(f"{ATOM}entry")
    assert [e.findtext(f"{ATOM}id") for e in entries] == expected_order(db_path)
    for entry in entries:
        assert datetime.fromisoformat(entry.findtext(f"{ATOM}updated")).tzinfo is not None
        assert datetime.fromisoformat(entry.findtext(f"{ATOM}published")).tzinfo is not None
        alternate = [
            link for link in entry.findall(f"{ATOM}link") if link.get("rel") == "alternate"
        ]
        assert [link.get("href") for link in alternate] == [entry.findtext(f"{ATOM}id")]
        assert entry.find(f"{ATOM}content").get("type") == "html"
    edited = next(e for e in entries if e.findtext(f"{ATOM}id") == corpus[10]["url"])
    assert edited.findtext(f"{ATOM}updated") == "2030-01-02T03:04:05+00:00"
    assert edited.findtext(f"{ATOM}title").endswith("(corrected)")
    with_time = next(e for e in entries if e.findtext(f"{ATOM}id") == corpus[7]["url"])
    assert with_time.findtext(f"{ATOM}published") == "2024-03-05T14:30:00+03:00"
    attachment = next(e for e in entries if e.findtext(f"{ATOM}id") == corpus[5]["url"])
    related = [
        link.get("href")
        for link in attachment.findall(f"{ATOM}link")
        if link.get("rel") == "related"
    ]
    assert related == ["https://news.example.org/files/report.pdf"]
    # the feed's own date is its newest entry's
    assert root.findtext(f"{ATOM}updated") == "2030-01-02T03:04:05+00:00"

    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "atom10"
    assert [e.id for e in parsed.entries] == expected_order(db_path)
    assert all(e.link == e.id for e in parsed.entries)
    by_url = {e.id: e for e in parsed.entries}
    for article in corpus:
        entry = by_url[article["url"]]
        if article is not corpus[3]:
            assert entry.title == article["title"]
        assert entry.summary == article["summary"].strip()
        assert entry.published_parsed and entry.updated_parsed


def test_rss_holds_every_article_newest_first(db_path, corpus):
    data = run_export(db_path, "rss", feed=FeedInfo(title="Test", link="https://news.example.org/"))
    root = ET.fromstring(data)
    channel = root.find("channel")
    assert channel.findtext("link") == "https://news.example.org/"
    items = channel.findall("item")
    assert [i.findtext("guid") for i in items] == expected_order(db_path)
    for item in items:
        assert item.find("guid").get("isPermaLink") == "true"
        assert item.findtext("link") == item.findtext("guid")
        assert email.utils.parsedate_to_datetime(item.findtext("pubDate")).tzinfo is not None
        assert item.findtext("description")
        assert item.find(f"{CONTENT}encoded") is not None
    assert email.utils.parsedate_to_datetime(channel.findtext("lastBuildDate")).year == 2030

    parsed = feedparser.parse(data)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == "rss20"
    assert [e.id for e in parsed.entries] == expected_order(db_path)
    assert all(e.published_parsed for e in parsed.entries)


@pytest.mark.parametrize("fmt", ["atom", "rss"])
def test_markup_and_escapes_in_titles_are_escaped(db_path, corpus, fmt):
    data = run_export(db_path, fmt)
    assert b"<script>" not in data and b"<img" not in data and b"<b>" not in data
    assert b"\x1b" not in data and b"\x00" not in data and b"\x07" not in data
    assert b"&lt;script&gt;" in data
    root = ET.fromstring(data)  # still well-formed
    titles = [t.text for t in root.iter() if t.tag in (f"{ATOM}title", "title")]
    assert [t for t in titles if t and "alert" in t] == ['<script>alert("x")</script> & red  end']
    entry = next(e for e in feedparser.parse(data).entries if e.id == corpus[3]["url"])
    content = entry.content[0].value
    assert "<img" not in content and "&lt;img" in content  # the page's markup shown as text
    assert "<p>Second paragraph.</p>" in content


def test_json_jsonl_csv_hold_every_article(db_path, corpus):
    order = expected_order(db_path)
    array = json.loads(run_export(db_path, "json"))
    assert [row["url"] for row in array] == order
    assert set(array[0]) == set(COLUMNS)
    by_url = {row["url"]: row for row in array}
    assert by_url[corpus[5]["url"]]["attachments"] == ["https://news.example.org/files/report.pdf"]
    assert by_url[corpus[3]["url"]]["title"] == NASTY_TITLE  # data formats keep the data

    lines = run_export(db_path, "jsonl").decode("utf-8").splitlines()
    assert [json.loads(line)["url"] for line in lines] == order

    text = run_export(db_path, "csv").decode("utf-8")
    reader = csv.reader(io.StringIO(text, newline=""))
    assert next(reader) == list(COLUMNS)
    rows = list(reader)
    assert [row[COLUMNS.index("url")] for row in rows] == order
    bodies = {row[COLUMNS.index("url")]: row[COLUMNS.index("body")] for row in rows}
    assert all(bodies[a["url"]] == a["body"] for a in corpus)


def test_empty_selection_is_still_valid(db_path):
    for fmt in ("atom", "rss"):
        data = run_export(db_path, fmt, sources=["nobody"])
        assert not feedparser.parse(data).bozo and feedparser.parse(data).entries == []
    assert json.loads(run_export(db_path, "json", sources=["nobody"])) == []
    assert run_export(db_path, "jsonl", sources=["nobody"]) == b""
    assert run_export(db_path, "csv", sources=["nobody"]).decode().strip() == ",".join(COLUMNS)


def test_filters_and_search(db_path, corpus):
    alpha = [a["url"] for a in corpus if a["source"] == "alpha"]
    rows = json.loads(run_export(db_path, "json", sources=["alpha"]))
    assert sorted(r["url"] for r in rows) == sorted(alpha)
    assert len(json.loads(run_export(db_path, "json", limit=5))) == 5
    recent = json.loads(run_export(db_path, "json", since="2024-06-01"))
    assert {r["url"] for r in recent} == {
        a["url"] for a in corpus if a["published"] is None or a["published"] >= "2024-06-01"
    }
    matching = json.loads(run_export(db_path, "json", query="minsk"))
    assert {r["url"] for r in matching} == {a["url"] for a in corpus if has_words(a, "minsk")}
    with pytest.raises(SearchSyntaxError), Archive(db_path) as archive:
        export(archive, "json", io.BytesIO(), query="minsk AND")
    with pytest.raises(ValueError), Archive(db_path) as archive:
        export(archive, "yaml", io.BytesIO())


def test_writers_need_a_binary_stream(db_path):
    with Archive(db_path) as archive, pytest.raises(TypeError):
        export(archive, "jsonl", io.StringIO())


def generated_rows(count: int) -> Any:
    """Rows shaped like the archive's, made on the fly (nothing kept)."""
    body = "\n\n".join(["Collective security and the border, once more. " * 12] * 4)
    for index in range(count):
        yield {
            "id": index,
            "source": "bench",
            "url": f"https://bench.example.org/{index}",
            "title": f"Article number {index} about the summit",
            "published": f"2024-{1 + index % 12:02d}-{1 + index % 28:02d}",
            "updated": f"2024-{1 + index % 12:02d}-{1 + index % 28:02d}",
            "summary": body[:200],
            "body": body,
            "language": "en",
            "section": "news",
            "attachments": '["https://bench.example.org/a.pdf"]',
            "first_seen": "2026-01-01T00:00:00+00:00",
            "last_seen": "2026-01-01T00:00:00+00:00",
            "removed_at": None,
        }


class CountingSink(io.RawIOBase):
    def __init__(self) -> None:
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.size += len(data)
        return len(data)


def peak_bytes(writer: Any, count: int) -> int:
    tracemalloc.start()
    try:
        writer(generated_rows(count), CountingSink())
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("writer", [write_atom, write_rss, write_json, write_jsonl, write_csv])
def test_memory_does_not_grow_with_the_number_of_articles(writer):
    small = peak_bytes(writer, 500)
    large = peak_bytes(writer, 4000)  # 8x the articles, about 8x the output
    assert large < small * 1.5 + 256 * 1024, (small, large)


def test_article_rows_are_streamed(db_path):
    with Archive(db_path) as archive:
        rows = article_rows(archive)
        assert iter(rows) is rows  # a generator over the cursor, not a list
        first = next(rows)
        assert set(first) == set(COLUMNS)


# -- CLI -------------------------------------------------------------------------------------


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    command = [sys.executable, "-m", "monitor", "--db", str(cwd / "newsmon.db"), *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, cwd=cwd, capture_output=True, timeout=120, env=env)


def test_cli_atom_to_stdout_and_rss_to_file(db_path, corpus):
    folder = db_path.parent
    result = run_cli(folder, "export", "--format", "atom")
    assert result.returncode == 0, result.stderr
    parsed = feedparser.parse(result.stdout)
    assert not parsed.bozo and len(parsed.entries) == len(corpus)
    assert parsed.feed.title == "newsmon: all sources"

    target = folder / "out" / "feed.xml"
    target.parent.mkdir()
    result = run_cli(folder, "export", "--format", "rss", "--source", "alpha", "-o", str(target))
    assert result.returncode == 0, result.stderr
    assert b"articles written to" in result.stderr and result.stdout == b""
    items = ET.parse(target).getroot().findall("channel/item")
    assert len(items) == sum(a["source"] == "alpha" for a in corpus)
    assert os.listdir(target.parent) == ["feed.xml"]  # no temporary file left behind


def test_cli_json_csv_limit_search(db_path, corpus):
    folder = db_path.parent
    jsonl = run_cli(folder, "export", "--format", "jsonl", "--limit", "7")
    assert len(jsonl.stdout.decode().splitlines()) == 7
    csv_out = run_cli(folder, "export", "--format", "csv", "--search", '"collective security"')
    rows = list(csv.reader(io.StringIO(csv_out.stdout.decode(), newline="")))
    assert rows[0] == list(COLUMNS)
    assert len(rows) - 1 == sum(has_phrase(a, "collective security") for a in corpus)
    array = json.loads(run_cli(folder, "export", "--format", "json").stdout)
    assert len(array) == len(corpus)


def test_cli_export_errors_exit_2(db_path):
    folder = db_path.parent
    for args in (
        ("export", "--search", '"'),
        ("export", "--format", "yaml"),
        ("export", "--source", "nope"),
        ("export", "--since", "someday"),
    ):
        result = run_cli(folder, *args)
        assert result.returncode == 2, (args, result.stderr)
        assert b"Traceback" not in result.stderr and result.stdout == b""
    search_error = run_cli(folder, "export", "--search", "minsk AND")
    assert len(search_error.stderr.decode().strip().splitlines()) == 1
