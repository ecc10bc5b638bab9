"""Full-text search: the library (storage.search) and `newsmon search`, on real SQLite archives.

Expected results are computed in Python from the stored text, independently of SQLite.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from storage.archive import Archive
from storage.search import (
    MARKS,
    SearchSyntaxError,
    count,
    prepare_query,
    search,
    split_marked,
)

VOCABULARY = [
    *("afghanistan", "border", "collective", "security", "treaty", "summit", "exercise"),
    *("minsk", "moscow", "peace", "council", "drone", "ministers", "café"),
    *("безопасность", "граница", "договор"),
]
FILLER = ["the", "of", "and", "in", "on", "with", "at", "for"]
SOURCES = ("alpha", "beta", "gamma")


def tokens(text: str | None) -> list[str]:
    """What FTS5's unicode61 tokenizer (remove_diacritics 2) indexes, computed in Python."""
    folded = unicodedata.normalize("NFKD", (text or "").casefold())
    folded = "".join(ch for ch in folded if not unicodedata.combining(ch))
    return re.findall(r"[^\W_]+", folded)


def has_words(article: dict[str, Any], *words: str) -> bool:
    found = set(tokens(article["title"])) | set(tokens(article["body"]))
    return all(tokens(word)[0] in found for word in words)


def has_phrase(article: dict[str, Any], phrase: str) -> bool:
    wanted = tokens(phrase)
    for column in ("title", "body"):
        have = tokens(article[column])
        for start in range(len(have) - len(wanted) + 1):
            if have[start : start + len(wanted)] == wanted:
                return True
    return False


def make_corpus(count: int = 80, seed: int = 7) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    articles = []
    for index in range(count):
        words = [rnd.choice(VOCABULARY + FILLER) for _ in range(40)]
        if index % 4 == 0:
            words[5:7] = ["collective", "security"]  # the phrase
        elif index % 4 == 1:
            words[5:8] = ["security", "and", "collective"]  # both words, not the phrase
        body = " ".join(words[:20]) + ".\n\n" + " ".join(words[20:]) + "."
        published = (
            None
            if index % 9 == 0
            else f"{2023 + index % 2}-{1 + index % 12:02d}-{1 + index % 27:02d}"
        )
        articles.append(
            {
                "source": SOURCES[index % len(SOURCES)],
                "url": f"https://news.example.org/item/{index}",
                "title": " ".join(rnd.choice(VOCABULARY) for _ in range(4)).capitalize(),
                "body": body,
                "summary": body[:80],
                "published": published,
                "language": "en",
                "section": "news",
                "content_hash": f"hash-{index}",
            }
        )
    return articles


def make_article(number: int, title: str, body: str, **extra: Any) -> dict[str, Any]:
    url = f"https://x.example/{number}"
    return {"source": "s", "url": url, "title": title, "body": body, "content_hash": url, **extra}


def build_archive(path: Path, articles: list[dict[str, Any]]) -> Path:
    with Archive(path) as archive:
        for article in articles:
            archive.store_article(article)
    return path


@pytest.fixture
def corpus() -> list[dict[str, Any]]:
    return make_corpus()


@pytest.fixture
def archive(tmp_path: Path, corpus: list[dict[str, Any]]) -> Archive:
    build_archive(tmp_path / "newsmon.db", corpus)
    with Archive(tmp_path / "newsmon.db") as opened:
        yield opened


def urls(rows: Any) -> set[str]:
    return {row["url"] for row in rows}


# -- library ---------------------------------------------------------------------------------


@pytest.mark.parametrize("word", ["afghanistan", "Minsk", "DRONE", "cafe", "café", "граница"])
def test_word_matches_exactly_the_articles_containing_it(archive, corpus, word):
    expected = {a["url"] for a in corpus if has_words(a, word)}
    assert expected, "the corpus should contain every test word"
    assert urls(search(archive, word)) == expected
    assert count(archive, word) == len(expected)


def test_several_words_mean_all_of_them(archive, corpus):
    expected = {a["url"] for a in corpus if has_words(a, "border", "peace", "moscow")}
    assert urls(search(archive, "border peace moscow")) == expected
    either = {a["url"] for a in corpus if has_words(a, "border") or has_words(a, "minsk")}
    assert urls(search(archive, "border OR minsk")) == either


def test_phrase_in_double_quotes(archive, corpus):
    phrase = {a["url"] for a in corpus if has_phrase(a, "collective security")}
    words = {a["url"] for a in corpus if has_words(a, "collective", "security")}
    assert urls(search(archive, '"collective security"')) == phrase
    assert count(archive, '"Collective Security"') == len(phrase)
    assert urls(search(archive, "collective security")) == words
    assert phrase < words  # the corpus has both words apart too, so the phrase is stricter


def test_prefix_column_filter_and_not(archive, corpus):
    prefix = {
        a["url"]
        for a in corpus
        if any(t.startswith("afghan") for t in tokens(a["title"] + " " + a["body"]))
    }
    assert urls(search(archive, "afghan*")) == prefix
    in_title = {a["url"] for a in corpus if "summit" in tokens(a["title"])}
    assert urls(search(archive, "title:summit")) == in_title
    without = {a["url"] for a in corpus if has_words(a, "treaty") and not has_words(a, "peace")}
    assert urls(search(archive, "treaty NOT peace")) == without


def test_words_with_punctuation_are_searched_as_phrases(tmp_path):
    articles = [
        make_article(1, "Covid-19 measures", "U.S. and CSTO-2024"),
        make_article(2, "Other", "covid 19 report"),
        make_article(3, "Other", "19 covid"),
    ]
    with Archive(build_archive(tmp_path / "p.db", articles)) as archive:
        assert urls(search(archive, "covid-19")) == {"https://x.example/1", "https://x.example/2"}
        assert urls(search(archive, "U.S.")) == {"https://x.example/1"}
        assert urls(search(archive, "CSTO-2024")) == {"https://x.example/1"}
        assert urls(search(archive, "«covid»")) == {a["url"] for a in articles}


BAD_QUERIES = ['"', 'afghanistan "border', "AND", "border AND", "OR peace", "*", "border *"]


@pytest.mark.parametrize("query", [*BAD_QUERIES, "(", "NOT", "   ", "--"])
def test_unparseable_queries_raise_search_syntax_error(archive, query):
    with pytest.raises(SearchSyntaxError) as caught:
        list(search(archive, query))
    message = str(caught.value)
    assert message and "\n" not in message
    with pytest.raises(SearchSyntaxError):
        count(archive, query)


def test_syntax_error_is_raised_before_iterating(archive):
    with pytest.raises(SearchSyntaxError):
        search(archive, "border AND")  # no list(): the call itself raises


def test_prepare_query_keeps_fts5_syntax():
    assert prepare_query('"collective security" afghan*') == '"collective security" afghan*'
    assert prepare_query("a OR (b NOT c)") == "a OR (b NOT c)"
    assert prepare_query("title:summit") == "title:summit"
    assert prepare_query('"collective sec"*') == '"collective sec"*'
    assert prepare_query("covid-19") == '"covid-19"'
    assert prepare_query("nosuchcolumn:x") == '"nosuchcolumn:x"'


def test_filters_source_since_limit(archive, corpus):
    word = "security"
    matching = [a for a in corpus if has_words(a, word)]
    only_alpha = {a["url"] for a in matching if a["source"] == "alpha"}
    assert urls(search(archive, word, sources=["alpha"])) == only_alpha
    assert urls(search(archive, word, sources="alpha")) == only_alpha
    two = {a["url"] for a in matching if a["source"] in ("alpha", "gamma")}
    assert urls(search(archive, word, sources=["alpha", "gamma"])) == two
    # since: published on/after the date; undated articles count from when they were first seen
    recent = {
        a["url"] for a in matching if a["published"] is None or a["published"] >= "2024-06-01"
    }
    assert urls(search(archive, word, since="2024-06-01")) == recent
    recent_beta = [a for a in matching if a["url"] in recent and a["source"] == "beta"]
    assert count(archive, word, since="2024-06-01", sources=["beta"]) == len(recent_beta)
    limited = list(search(archive, word, limit=3))
    assert len(limited) == 3
    assert [r["url"] for r in limited] == [r["url"] for r in search(archive, word)][:3]
    with pytest.raises(ValueError):
        search(archive, word, limit=0)


def test_ranked_by_bm25_then_newest_first(tmp_path):
    body = "A statement on regional matters and other topics of the day."
    articles = [
        make_article(1, "Drone news", body, published="2020-01-01"),
        make_article(2, "Drone news", body, published="2024-01-01"),
        make_article(3, "Drone news", body, published="2022-01-01"),
        make_article(4, "Other news", body + " drone", published="2025-01-01"),
    ]
    with Archive(build_archive(tmp_path / "r.db", articles)) as archive:
        rows = list(search(archive, "drone"))
    order = [int(row["url"].rsplit("/", 1)[1]) for row in rows]
    # equal scores (identical text) newest first; a body-only match ranks below title matches
    assert order == [2, 3, 1, 4]
    assert rows[0]["rank"] == rows[1]["rank"] == rows[2]["rank"] < rows[3]["rank"]


def dated_drone_articles() -> list[dict[str, Any]]:
    """Stored newest first, as a backfill stores them: ids run against the dates."""
    body = "A statement on regional matters and other topics of the day, drone."
    articles = [
        make_article(n, f"Report {n}", body, published=f"{2024 - n}-06-01") for n in range(1, 7)
    ]
    articles.append(make_article(7, "Drone drone drone", "Drone.", published="2001-01-01"))
    return articles


def test_a_broad_query_ranks_only_its_newest_matches(tmp_path):
    with Archive(build_archive(tmp_path / "w.db", dated_drone_articles())) as archive:
        rows = list(search(archive, "drone", window=3))
    assert sorted(row["published"] for row in rows) == ["2021-06-01", "2022-06-01", "2023-06-01"]


def test_without_a_window_every_match_is_ranked(tmp_path):
    with Archive(build_archive(tmp_path / "w.db", dated_drone_articles())) as archive:
        rows = list(search(archive, "drone", window=None))
        default = list(search(archive, "drone"))  # 7 matches: within the default window
    assert rows[0]["title"] == "Drone drone drone" and len(rows) == 7
    assert [row["id"] for row in default] == [row["id"] for row in rows]


def test_the_window_counts_the_matches_that_pass_the_filters(tmp_path):
    articles = dated_drone_articles()
    for article in articles[:3]:
        article["source"] = "other"
    with Archive(build_archive(tmp_path / "w.db", articles)) as archive:
        rows = list(search(archive, "drone", sources=["s"], window=2))
    assert sorted(row["published"] for row in rows) == ["2019-06-01", "2020-06-01"]


def test_a_changed_date_moves_the_article_in_the_index(tmp_path):
    with Archive(build_archive(tmp_path / "w.db", dated_drone_articles())) as archive:
        oldest = archive.get_article("https://x.example/7")
        archive.store_article(
            {
                **make_article(7, "Drone drone drone", "Drone."),
                "published": "2030-01-01",
                "content_hash": "new",
            }
        )
        rows = list(search(archive, "drone", window=1))
        check = "insert into articles_fts (articles_fts) values ('integrity-check')"
        archive.db.execute(check)
    assert [row["id"] for row in rows] == [oldest["id"]]


def test_snippet_and_highlight(archive):
    rows = list(search(archive, "afghanistan", limit=5, highlight=MARKS))
    for row in rows:
        parts = split_marked(row["snippet"]) + split_marked(row["title"])
        assert any(hit and tokens(text) == ["afghanistan"] for text, hit in parts)
        assert MARKS[0] not in "".join(text for text, _ in parts)
    plain = next(search(archive, "afghanistan", limit=1))
    assert MARKS[0] not in plain["snippet"] and plain["snippet"]
    assert set(plain) >= {"id", "url", "title", "published", "source", "snippet", "rank"}


def test_split_marked():
    assert split_marked("a \x02b\x03 c") == [("a ", False), ("b", True), (" c", False)]
    assert split_marked(None) == []
    assert split_marked("plain") == [("plain", False)]


# -- CLI -------------------------------------------------------------------------------------


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "monitor", "--db", str(cwd / "newsmon.db"), *args]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


@pytest.mark.parametrize("query", ['"', "border AND", "*"])
def test_cli_bad_syntax_exits_2_with_one_line(tmp_path, corpus, query):
    build_archive(tmp_path / "newsmon.db", corpus)
    result = run_cli(tmp_path, "search", query)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.stderr


def test_cli_json_counts_filters(tmp_path, corpus):
    build_archive(tmp_path / "newsmon.db", corpus)
    expected = [a for a in corpus if has_phrase(a, "collective security") and a["source"] == "beta"]
    result = run_cli(
        tmp_path, "search", '"collective security"', "--source", "beta", "--limit", "100", "--json"
    )
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert {row["url"] for row in rows} == {a["url"] for a in expected}
    assert all(set(row) == {"id", "url", "title", "published", "source", "snippet"} for row in rows)
    assert all("\x02" not in row["snippet"] for row in rows)

    since = run_cli(
        tmp_path, "search", "security", "--since", "2024-06-01", "--limit", "2", "--json"
    )
    assert since.returncode == 0, since.stderr
    rows = [json.loads(line) for line in since.stdout.splitlines()]
    assert len(rows) == 2
    assert all(row["published"] is None or row["published"] >= "2024-06-01" for row in rows)


def test_cli_human_output_is_plain_when_piped(tmp_path, corpus):
    corpus[0]["title"] = "Afghanistan \x1b[31mred\x1b]0;pwned\x07 title"
    build_archive(tmp_path / "newsmon.db", corpus)
    expected = sum(has_words(a, "afghanistan") for a in corpus)
    result = run_cli(tmp_path, "search", "afghanistan", "--limit", "3")
    assert result.returncode == 0, result.stderr
    assert "\x1b" not in result.stdout and "\x02" not in result.stdout
    assert result.stdout.count("https://news.example.org/item/") == 3
    assert f"3 of {expected} matching articles" in result.stderr
    everything = run_cli(tmp_path, "search", "afghanistan", "--limit", "1000")
    assert everything.stdout.count("https://news.example.org/item/") == expected
    assert "red title" in everything.stdout


def test_cli_usage_errors(tmp_path, corpus):
    build_archive(tmp_path / "newsmon.db", corpus)
    for args, needle in [
        (("search", "peace", "--source", "nope"), "unknown source 'nope'"),
        (("search", "peace", "--since", "not a date"), "--since"),
    ]:
        result = run_cli(tmp_path, *args)
        assert result.returncode == 2, result.stderr
        assert needle in result.stderr and "Traceback" not in result.stderr
    missing = subprocess.run(
        [sys.executable, "-m", "monitor", "--db", str(tmp_path / "missing.db"), "search", "x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert missing.returncode == 2 and "no archive" in missing.stderr
    assert not (tmp_path / "missing.db").exists()


def test_cli_highlights_matches_on_a_terminal(tmp_path, corpus, monkeypatch):
    from monitor import cli_browse
    from monitor.cli import cli

    build_archive(tmp_path / "newsmon.db", corpus)
    monkeypatch.setattr(cli_browse, "_color", lambda stream=None: True)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(
        cli, ["--db", str(tmp_path / "newsmon.db"), "search", "minsk", "--limit", "2"], color=True
    )
    assert result.exit_code == 0, result.output
    assert "\x1b[33m\x1b[1m" in result.output  # yellow bold around the matched word
    assert re.search(r"\x1b\[33m\x1b\[1m[Mm]insk\x1b\[0m", result.output)


def test_cli_says_when_only_the_newest_matches_were_ranked(tmp_path, monkeypatch):
    from monitor.cli import cli
    from storage import search as library

    build_archive(tmp_path / "newsmon.db", dated_drone_articles())
    monkeypatch.setattr(library, "RANK_WINDOW", 3)
    args = ["--db", str(tmp_path / "newsmon.db"), "search", "drone", "--json"]
    windowed = CliRunner().invoke(cli, args)
    ranked_all = CliRunner().invoke(cli, [*args, "--rank-all"])
    assert windowed.exit_code == ranked_all.exit_code == 0, windowed.output
    assert "Ranked the newest 3 of them; --rank-all ranks every match" in windowed.stderr
    assert "Ranked the newest" not in ranked_all.stderr
    assert len(windowed.stdout.splitlines()) == 3
    assert json.loads(ranked_all.stdout.splitlines()[0])["title"] == "Drone drone drone"


def test_the_index_orders_by_publication_day_from_midnight_utc(tmp_path):
    days = ["2024-01-12", "2024-01-12T12:00:00+00:00", "2024-01-12T23:59:59+00:00", "2024-01-13"]
    articles = [make_article(n, "Drone", "Drone.", published=day) for n, day in enumerate(days)]
    with Archive(build_archive(tmp_path / "d.db", articles)) as archive:
        keys = [row[0] for row in archive.db.execute("select search_order >> 32 from articles")]
    assert keys[0] == keys[1] == keys[2] == keys[3] - 1


def test_an_undated_article_stays_searchable_when_first_seen_changes(tmp_path):
    articles = [make_article(1, "Drone", "Drone.", first_seen="2024-01-01T00:00:00+00:00")]
    with Archive(build_archive(tmp_path / "u.db", articles)) as archive:
        archive.db.execute("update articles set first_seen = '2025-06-01T00:00:00+00:00'")
        assert [row["title"] for row in search(archive, "drone")] == ["Drone"]
