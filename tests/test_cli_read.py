"""Reading the archive through the real CLI: `list`, `show` and `sources` after one crawl."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from typing import Any

import pytest

from monitor.replica import Article, Replica, ReplicaServer
from tests.conftest import Workspace, replica_config

LINE = re.compile(r"^\s*(?P<id>\d+)\s+(?P<date>\d{4}-\d\d-\d\d|-{10})\s+(?P<title>.+)$")


@dataclass
class Crawled:
    """A workspace crawled once; CLI answers are cached because reading changes nothing."""

    ws: Workspace
    server: ReplicaServer
    articles: list[Article]
    _answers: dict[tuple[str, ...], subprocess.CompletedProcess[str]] = field(default_factory=dict)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        if args not in self._answers:
            self._answers[args] = self.ws.run(*args)
        return self._answers[args]

    def listed(self, *args: str) -> list[dict[str, str]]:
        result = self.run("list", *args)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        matches = [LINE.match(line) for line in lines]
        assert all(matches), lines
        return [m.groupdict() for m in matches if m]

    def row(self, column: str, value: Any) -> dict[str, Any]:
        """The stored article whose `column` ("id" or "url") equals `value`."""
        return next(self.ws.db().query(f"select * from articles where {column} = ?", [value]))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Crawled]:
    en, ru = Replica(articles=25, per_page=10), Replica(articles=12, language="ru")
    with ReplicaServer(en, ru) as server:
        ws = Workspace(tmp_path_factory.mktemp("read"))
        ws.write_config(replica_config(server))
        crawl = ws.run("crawl")
        assert crawl.returncode == 0, crawl.stderr
        yield Crawled(ws, server, [*en.articles(), *ru.articles()])


def newest_dates(articles: list[Article], n: int) -> list[str]:
    return sorted((a.published.isoformat() for a in articles), reverse=True)[:n]


# -- list ------------------------------------------------------------------------------------------


def test_list_shows_articles_newest_first(archive):
    dates = [entry["date"] for entry in archive.listed("--limit", "100")]
    assert len(dates) == len(archive.articles)
    assert dates == sorted(dates, reverse=True)


def test_list_limit_shows_the_n_newest(archive):
    dates = [entry["date"] for entry in archive.listed("--limit", "5")]
    assert dates == newest_dates(archive.articles, 5)


def test_list_shows_titles(archive):
    titles = {entry["title"] for entry in archive.listed("--limit", "100")}
    assert titles == {a.title for a in archive.articles}


def test_list_source_shows_only_that_source(archive):
    entries = archive.listed("--source", "csto-ru", "--limit", "100")
    assert len(entries) == 12
    assert {archive.row("id", int(e["id"]))["source"] for e in entries} == {"csto-ru"}


def test_list_since_shows_articles_published_on_or_after_the_date(archive):
    since = date(2024, 4, 15)
    entries = archive.listed("--since", since.isoformat(), "--limit", "100")
    expected = sorted(
        (a.published.isoformat() for a in archive.articles if a.published >= since), reverse=True
    )
    assert [e["date"] for e in entries] == expected


def test_list_since_accepts_a_day_first_date(archive):
    iso = archive.listed("--since", "2024-04-15", "--limit", "100")
    assert archive.listed("--since", "15.04.2024", "--limit", "100") == iso


def test_list_with_a_bad_since_is_one_line_and_exit_2(archive):
    result = archive.run("list", "--since", "not-a-date")
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:") and "not-a-date" in lines[0]


def test_list_json_prints_one_parseable_object_per_line(archive):
    result = archive.run("list", "--json", "--limit", "7")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(rows) == 7
    for row in rows:
        assert {"id", "source", "published", "title", "url"} <= row.keys()
        assert row["url"].startswith(archive.server.base_url)
    assert [r["published"] for r in rows] == newest_dates(archive.articles, 7)


# -- show ------------------------------------------------------------------------------------------


def test_show_by_id_prints_the_title_and_the_body(archive):
    row = archive.row("url", f"{archive.server.en_url}news_odkb/{archive.articles[0].slug}/")
    result = archive.run("show", str(row["id"]))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == row["title"]
    assert row["body"] in result.stdout


def test_show_by_url_prints_the_title_and_the_body(archive):
    russian = next(a for a in archive.articles if a.language == "ru")
    url = f"{archive.server.ru_url}news_odkb/{russian.slug}/"
    result = archive.run("show", url)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == russian.title
    assert archive.row("url", url)["body"] in result.stdout


@pytest.mark.parametrize(
    "suffix",
    [pytest.param("?sphrase_id=12345", id="sphrase-id"), pytest.param("#comments", id="fragment")],
)
def test_show_finds_an_article_by_a_non_canonical_url(archive, suffix):
    """A URL as the site links it (search highlight, fragment) names the stored article."""
    article = archive.articles[0]
    result = archive.run("show", f"{archive.server.en_url}news_odkb/{article.slug}/{suffix}")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == article.title


def test_show_prints_the_published_date_and_url(archive):
    article = archive.articles[3]
    url = f"{archive.server.en_url}news_odkb/{article.slug}/"
    result = archive.run("show", url)
    assert article.published.isoformat() in result.stdout
    assert url in result.stdout


def test_show_json_gives_the_articles_columns_without_the_search_key(archive):
    row = archive.row("url", f"{archive.server.en_url}news_odkb/{archive.articles[0].slug}/")
    result = archive.run("show", str(row["id"]), "--json")
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout)
    assert "search_order" not in shown
    assert {"id", "url", "title", "body", "published", "revisions"} <= shown.keys()


def test_show_an_unknown_id_is_one_line_and_exit_1(archive):
    result = archive.run("show", "99999")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error:") and "99999" in lines[0]


# -- sources ---------------------------------------------------------------------------------------


def test_sources_lists_both_sources_with_their_article_counts(archive):
    result = archive.run("sources")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("csto-en: 25 articles")
    assert lines[1].startswith("csto-ru: 12 articles")


def test_sources_shows_the_last_crawl(archive):
    lines = archive.run("sources").stdout.splitlines()
    assert all("last ok" in line for line in lines), lines
