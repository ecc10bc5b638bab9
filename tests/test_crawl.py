"""End to end: the real CLI (and `scrapy crawl`) crawls the replica into a real SQLite file.

Scrapy's reactor runs once per process, so every crawl is a subprocess. Crawls are expensive, so
each scenario crawls once in a module-scoped fixture and several tests read what it left behind.
Expected values come from the replica's own Article data, never from the crawled pages.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from monitor.replica import Article, Replica, ReplicaServer
from storage.normalize import normalize_whitespace
from tests.conftest import CSTO_SELECTORS, FAST_SETTINGS, Workspace

REPO_ROOT = Path(__file__).resolve().parents[1]
EN_COUNT, RU_COUNT = 25, 12
# The Russian source has no listing `date` selector: its published dates must come from the
# article pages, where every third one is written in words ("22 апреля 2024").
RU_SELECTORS = "\n".join(
    line for line in CSTO_SELECTORS.splitlines() if not line.startswith("date")
)
SUMMARY_KEYS = {"requests", "pages", "new", "updated", "unchanged", "errors"}


# -- helpers ---------------------------------------------------------------------------------------


def source(name: str, url: str, language: str, selectors: str = CSTO_SELECTORS) -> str:
    return (
        f'\n[[sources]]\nname = "{name}"\nstart_urls = ["{url}"]\nlanguage = "{language}"\n'
        + selectors
    )


def config(*sources: str, settings: str = FAST_SETTINGS) -> str:
    return 'database = "newsmon.db"\n' + "".join(sources) + settings


def article_url(base_url: str, article: Article) -> str:
    """The canonical URL of a replica article: no sphrase_id, no fragment."""
    prefix = "/ru" if article.language == "ru" else ""
    return f"{base_url}{prefix}/news/news_odkb/{article.slug}/"


def body_of(article: Article) -> str:
    return "\n\n".join(normalize_whitespace(p) for p in article.paragraphs)


def rows_by_url(ws: Workspace) -> dict[str, dict[str, Any]]:
    return {row["url"]: row for row in ws.db().query("select * from articles")}


def table_counts(ws: Workspace) -> dict[str, int]:
    db = ws.db()
    return {name: db[name].count for name in ("articles", "revisions", "crawl_runs")}


def one_json_object(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1, result.stdout
    data = json.loads(lines[0])
    assert isinstance(data, dict)
    return data


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Site:
    server: ReplicaServer
    en: Replica
    ru: Replica

    @property
    def base(self) -> str:
        return self.server.base_url

    def all_articles(self) -> list[Article]:
        return [*self.en.articles(), *self.ru.articles()]

    def every_nth(self, replica: Replica, n: int) -> list[Article]:
        return [a for a in replica.articles() if a.id % n == 0]


def new_site() -> Site:
    """25 English and 12 Russian (windows-1251) articles, 10 a page."""
    en = Replica(articles=EN_COUNT, per_page=10)
    ru = Replica(articles=RU_COUNT, language="ru")
    return Site(ReplicaServer(en, ru).start(), en, ru)


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    """The replica server most scenarios crawl; nothing edits it, so they can share it."""
    shared = new_site()
    yield shared
    shared.server.stop()


@pytest.fixture(scope="module")
def scenarios(site: Site, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Future]]:
    """Every crawl scenario of this module, run side by side: each is its own process, folder
    and database, so they cannot disturb one another, and the module takes the time of the
    longest scenario instead of the sum of them all."""
    jobs = {
        "main": crawl_again_and_in_full,
        "max_pages": crawl_first_page_then_all,
        "no_selectors": crawl_without_selectors,
        "broken_item": crawl_with_broken_item_selector,
        "scrapy": crawl_with_scrapy,
        "unreachable": crawl_unreachable_site,
    }
    folders = {name: Workspace(tmp_path_factory.mktemp(name)) for name in jobs}
    with ThreadPoolExecutor(max_workers=3) as pool:
        yield {name: pool.submit(job, site, folders[name]) for name, job in jobs.items()}


# -- the main crawl: first, again, then --full -----------------------------------------------------


@dataclass
class Crawled:
    ws: Workspace
    first: subprocess.CompletedProcess[str]
    rows: dict[str, dict[str, Any]]
    runs_after_first: list[dict[str, Any]]
    counts_after_first: dict[str, int]
    second: subprocess.CompletedProcess[str]
    rows_after_second: dict[str, dict[str, Any]]
    counts_after_second: dict[str, int]
    full: subprocess.CompletedProcess[str]
    counts_after_full: dict[str, int]
    runs_after_full: list[dict[str, Any]]


def crawl_again_and_in_full(site: Site, ws: Workspace) -> Crawled:
    """`crawl --json` (both sources), the same again, then `crawl --full --json`."""
    ws.write_config(
        config(
            source("csto-en", site.server.en_url, "en"),
            source("csto-ru", site.server.ru_url, "ru", RU_SELECTORS),
        )
    )
    first = ws.run("crawl", "--json")
    rows, counts_first = rows_by_url(ws), table_counts(ws)
    runs_first = list(ws.db().query("select * from crawl_runs order by id"))
    second = ws.run("crawl", "--json")
    rows_second, counts_second = rows_by_url(ws), table_counts(ws)
    full = ws.run("crawl", "--full", "--json")
    return Crawled(
        ws=ws,
        first=first,
        rows=rows,
        runs_after_first=runs_first,
        counts_after_first=counts_first,
        second=second,
        rows_after_second=rows_second,
        counts_after_second=counts_second,
        full=full,
        counts_after_full=table_counts(ws),
        runs_after_full=list(ws.db().query("select * from crawl_runs order by id")),
    )


@pytest.fixture(scope="module")
def crawled(scenarios: dict[str, Future]) -> Crawled:
    return scenarios["main"].result()


def stored(crawled: Crawled, site: Site, article: Article) -> dict[str, Any]:
    url = article_url(site.base, article)
    assert url in crawled.rows, f"article {article.id} ({article.language}) not stored at {url}"
    return crawled.rows[url]


def test_first_crawl_succeeds(crawled):
    assert crawled.first.returncode == 0, crawled.first.stderr
    assert "Traceback" not in crawled.first.stderr


def test_every_article_is_stored_exactly_once(crawled, site):
    expected = sorted(article_url(site.base, a) for a in site.all_articles())
    db = crawled.ws.db()
    urls = sorted(row["url"] for row in db.query("select url from articles"))
    assert urls == expected
    assert len(urls) == EN_COUNT + RU_COUNT


def test_each_source_stores_its_own_articles(crawled):
    db = crawled.ws.db()
    counts = dict(db.execute("select source, count(*) from articles group by source").fetchall())
    assert counts == {"csto-en": EN_COUNT, "csto-ru": RU_COUNT}


@pytest.mark.parametrize("name", ["csto-en", "csto-ru"])
def test_the_pinned_item_is_not_duplicated(crawled, site, name):
    replica = site.en if name == "csto-en" else site.ru
    pinned = replica.pinned_article()
    same_slug = [
        url
        for url, row in crawled.rows.items()
        if row["source"] == name and url.rstrip("/").endswith(f"/{pinned.slug}")
    ]
    assert same_slug == [article_url(site.base, pinned)]


def test_titles_equal_the_replica_articles(crawled, site):
    for article in site.all_articles():
        assert stored(crawled, site, article)["title"] == article.title


def test_published_dates_equal_the_replica_articles(crawled, site):
    for article in site.all_articles():
        assert stored(crawled, site, article)["published"] == article.published.isoformat()


def test_first_body_paragraph_is_the_article_lead(crawled, site):
    for article in site.all_articles():
        body = stored(crawled, site, article)["body"]
        assert body.split("\n\n")[0] == normalize_whitespace(article.lead)


def test_body_is_the_article_paragraphs_separated_by_a_blank_line(crawled, site):
    for article in site.all_articles():
        assert stored(crawled, site, article)["body"] == body_of(article)


@pytest.mark.parametrize(
    "furniture",
    [
        "Latest news",
        "Go back",
        "Back to the section",
        "Back to the all news",
        "Share",
        "Telegram",
        "Последние новости",
        "Назад",
        "Вернуться в раздел",
        "Поделиться",
    ],
)
def test_body_has_no_page_furniture(crawled, furniture):
    leaking = [row["url"] for row in crawled.rows.values() if furniture in row["body"]]
    assert leaking == []


def test_body_has_no_script_or_style_text(crawled, site):
    with_script = site.every_nth(site.en, 7) + site.every_nth(site.ru, 7)
    assert with_script, "the replica puts a <script> into every seventh article"
    for article in with_script:
        body = stored(crawled, site, article)["body"]
        assert "tracking" not in body
        assert "margin" not in body
        assert "var x" not in body


def test_urls_are_canonical(crawled):
    for url in crawled.rows:
        assert "sphrase_id" not in url
        assert "#" not in url
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+(/ru)?/news/news_odkb/[a-z0-9-]+/", url)


def test_articles_linked_with_sphrase_id_are_stored_under_the_clean_url(crawled, site):
    linked_with_sphrase = site.every_nth(site.en, 5)
    assert linked_with_sphrase
    for article in linked_with_sphrase:
        assert stored(crawled, site, article)["url"] == article_url(site.base, article)


def test_russian_windows_1251_titles_and_bodies_are_cyrillic(crawled, site):
    for article in site.ru.articles():
        row = stored(crawled, site, article)
        assert (row["title"], row["body"]) == (article.title, body_of(article))
        assert re.search("[а-яё]", row["title"]) and re.search("[а-яё]", row["body"])


def test_russian_dates_written_in_words_parse(crawled, site):
    in_words = site.every_nth(site.ru, 3)  # the replica writes these as "22 апреля 2024"
    assert in_words
    for article in in_words:
        assert stored(crawled, site, article)["published"] == article.published.isoformat()


def test_section_is_taken_from_the_url(crawled):
    assert {row["section"] for row in crawled.rows.values()} == {"news_odkb"}


def test_language_is_the_sources_language(crawled):
    languages = {(row["source"], row["language"]) for row in crawled.rows.values()}
    assert languages == {("csto-en", "en"), ("csto-ru", "ru")}


def test_summary_is_the_listing_lead(crawled, site):
    for article in site.all_articles():
        assert stored(crawled, site, article)["summary"] == normalize_whitespace(article.lead)


def test_attachments_are_recorded_for_articles_that_have_one(crawled, site):
    for article in site.all_articles():
        attachments = json.loads(stored(crawled, site, article)["attachments"])
        if article.attachment:
            prefix = "/ru" if article.language == "ru" else ""
            assert attachments == [f"{site.server.base_url}{prefix}{article.attachment}"]
        else:
            assert attachments == []


def test_every_article_has_one_revision(crawled):
    assert crawled.counts_after_first["revisions"] == EN_COUNT + RU_COUNT


def test_crawl_json_prints_exactly_one_object_with_the_counts(crawled):
    report = one_json_object(crawled.first)
    assert report.keys() >= SUMMARY_KEYS
    assert (report["new"], report["updated"], report["unchanged"]) == (37, 0, 0)
    assert report["errors"] == 0
    assert report["pages"] == 3 + 2
    assert report["requests"] >= report["pages"] + report["new"]


def test_crawl_runs_has_one_ok_row_per_source_with_counts(crawled):
    runs = [
        (r["source"], r["kind"], r["status"], r["pages"], r["new"], r["updated"], r["errors"])
        for r in crawled.runs_after_first
    ]
    assert sorted(runs) == [
        ("csto-en", "crawl", "ok", 3, EN_COUNT, 0, 0),
        ("csto-ru", "crawl", "ok", 2, RU_COUNT, 0, 0),
    ]
    assert all(r["started_at"] <= r["finished_at"] for r in crawled.runs_after_first)


def test_every_crawl_adds_one_run_per_source(crawled):
    runs = crawled.runs_after_full
    assert [r["source"] for r in runs] == ["csto-en", "csto-ru"] * 3
    assert {r["status"] for r in runs} == {"ok"}


# -- idempotence -----------------------------------------------------------------------------------


def test_second_crawl_reports_nothing_new_or_updated(crawled):
    assert crawled.second.returncode == 0, crawled.second.stderr
    report = one_json_object(crawled.second)
    assert (report["new"], report["updated"], report["errors"]) == (0, 0, 0)


def test_second_crawl_changes_no_row_counts(crawled):
    before, after = crawled.counts_after_first, crawled.counts_after_second
    assert (after["articles"], after["revisions"]) == (before["articles"], before["revisions"])


def test_second_crawl_changes_no_stored_content(crawled):
    keys = ("id", "title", "published", "body", "summary", "content_hash", "first_seen")

    def content(rows: dict[str, dict[str, Any]]) -> dict[str, tuple]:
        return {url: tuple(row[k] for k in keys) for url, row in rows.items()}

    assert content(crawled.rows_after_second) == content(crawled.rows)


def test_full_crawl_refetches_every_article_and_finds_nothing_new_or_updated(crawled):
    assert crawled.full.returncode == 0, crawled.full.stderr
    report = one_json_object(crawled.full)
    assert (report["new"], report["updated"], report["errors"]) == (0, 0, 0)
    assert report["unchanged"] == EN_COUNT + RU_COUNT
    assert report["pages"] == 3 + 2


def test_full_crawl_changes_no_row_counts(crawled):
    before, after = crawled.counts_after_first, crawled.counts_after_full
    assert (after["articles"], after["revisions"]) == (before["articles"], before["revisions"])


# -- --max-pages -----------------------------------------------------------------------------------


@dataclass
class PageLimited:
    ws: Workspace
    limited: subprocess.CompletedProcess[str]
    urls_after_limited: list[str]
    then: subprocess.CompletedProcess[str]
    urls_after_then: list[str]


def crawl_first_page_then_all(site: Site, ws: Workspace) -> PageLimited:
    """`crawl --max-pages 1`, then a plain `crawl` of the same source."""
    ws.write_config(config(source("csto-en", site.server.en_url, "en")))
    limited = ws.run("crawl", "--max-pages", "1", "--json")
    urls_limited = sorted(rows_by_url(ws))
    then = ws.run("crawl", "--json")
    return PageLimited(ws, limited, urls_limited, then, sorted(rows_by_url(ws)))


@pytest.fixture(scope="module")
def first_page_only(scenarios: dict[str, Future]) -> PageLimited:
    return scenarios["max_pages"].result()


def test_max_pages_1_stores_only_the_first_pages_entries(first_page_only, site):
    assert first_page_only.limited.returncode == 0, first_page_only.limited.stderr
    _, _, newest = site.en.listing(1)
    expected = sorted(article_url(site.base, a) for a in [site.en.pinned_article(), *newest])
    assert first_page_only.urls_after_limited == expected


def test_max_pages_1_fetches_one_listing_page(first_page_only):
    report = one_json_object(first_page_only.limited)
    assert (report["pages"], report["new"]) == (1, 11)


def test_a_crawl_after_a_page_limited_crawl_stores_the_older_pages(first_page_only, site):
    """--max-pages cut the first walk short: the archive is not complete until a crawl is."""
    assert first_page_only.then.returncode == 0, first_page_only.then.stderr
    expected = sorted(article_url(site.base, a) for a in site.en.articles())
    assert first_page_only.urls_after_then == expected


# -- automatic extraction --------------------------------------------------------------------------


Outcome = tuple[subprocess.CompletedProcess[str], Workspace]


def crawl_without_selectors(site: Site, ws: Workspace) -> Outcome:
    ws.write_config(
        config(
            source("csto-en", site.server.en_url, "en", selectors=""),
            source("csto-ru", site.server.ru_url, "ru", selectors=""),
        )
    )
    return ws.run("crawl", "--json"), ws


@pytest.fixture(scope="module")
def without_selectors(scenarios: dict[str, Future]) -> Outcome:
    return scenarios["no_selectors"].result()


def test_a_config_without_selectors_stores_every_article(without_selectors, site):
    result, ws = without_selectors
    assert result.returncode == 0, result.stderr
    expected = sorted(article_url(site.base, a) for a in site.all_articles())
    assert sorted(rows_by_url(ws)) == expected


def test_a_config_without_selectors_gets_every_title_right(without_selectors, site):
    rows = rows_by_url(without_selectors[1])
    wrong = [
        (a.language, a.id, rows[article_url(site.base, a)]["title"])
        for a in site.all_articles()
        if rows[article_url(site.base, a)]["title"] != a.title
    ]
    assert wrong == []


def test_a_config_without_selectors_gets_every_date_right(without_selectors, site):
    rows = rows_by_url(without_selectors[1])
    wrong = [
        (a.language, a.id, rows[article_url(site.base, a)]["published"])
        for a in site.all_articles()
        if rows[article_url(site.base, a)]["published"] != a.published.isoformat()
    ]
    assert wrong == []


def crawl_with_broken_item_selector(site: Site, ws: Workspace) -> Outcome:
    selectors = CSTO_SELECTORS.replace('item = "div.news-item"', 'item = "div.no-such-entry"')
    assert "no-such-entry" in selectors
    ws.write_config(config(source("csto-en", site.server.en_url, "en", selectors)))
    return ws.run("crawl", "--json"), ws


@pytest.fixture(scope="module")
def item_selector_broken(scenarios: dict[str, Future]) -> Outcome:
    return scenarios["broken_item"].result()


def test_an_item_selector_matching_nothing_still_stores_every_article(item_selector_broken, site):
    result, ws = item_selector_broken
    assert result.returncode == 0, result.stderr
    rows = rows_by_url(ws)
    assert sorted(rows) == sorted(article_url(site.base, a) for a in site.en.articles())
    assert {row["title"] for row in rows.values()} == {a.title for a in site.en.articles()}


def test_an_item_selector_matching_nothing_logs_a_warning_naming_it(item_selector_broken):
    result, _ = item_selector_broken
    warnings = [line for line in result.stderr.splitlines() if line.startswith("WARNING")]
    assert any("`item`" in line and "matched nothing" in line for line in warnings), result.stderr


# -- scrapy crawl from the repository root ---------------------------------------------------------


@dataclass
class ScrapyRun:
    result: subprocess.CompletedProcess[str]
    ws: Workspace
    site: Site
    requests: list[tuple[str, str, int]]


def crawl_with_scrapy(_: Site, ws: Workspace) -> ScrapyRun:
    """`scrapy crawl news` through scrapy.cfg; the config's [settings] turns robots.txt off.

    Its own replica server, so its request log holds this crawl's requests only.
    """
    site = new_site()
    try:
        settings = FAST_SETTINGS + "ROBOTSTXT_OBEY = false\n"
        path = ws.write_config(
            config(source("csto-en", site.server.en_url, "en"), settings=settings)
        )
        command = [sys.executable, "-m", "scrapy", "crawl", "news", "-a", "source=csto-en"]
        command += ["-s", f"NEWSMON_CONFIG={path}"]
        command += ["-s", "DOWNLOAD_DELAY=0", "-s", "AUTOTHROTTLE_ENABLED=False"]
        env = {**os.environ, "PYTHONWARNINGS": "ignore"}
        result = subprocess.run(
            command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, env=env
        )
        return ScrapyRun(result, ws, site, site.en.requests)
    finally:
        site.server.stop()


@pytest.fixture(scope="module")
def scrapy_crawl(scenarios: dict[str, Future]) -> ScrapyRun:
    return scenarios["scrapy"].result()


def test_scrapy_crawl_news_from_the_repository_root_stores_articles(scrapy_crawl):
    assert scrapy_crawl.result.returncode == 0, scrapy_crawl.result.stderr[-3000:]
    assert "Traceback" not in scrapy_crawl.result.stderr
    rows = rows_by_url(scrapy_crawl.ws)
    own = scrapy_crawl.site
    assert sorted(rows) == sorted(article_url(own.base, a) for a in own.en.articles())
    assert {row["source"] for row in rows.values()} == {"csto-en"}


def test_scrapy_crawl_news_applies_the_configs_settings_table(scrapy_crawl):
    robots = [target for _, target, _ in scrapy_crawl.requests if target == "/robots.txt"]
    assert robots == [], "ROBOTSTXT_OBEY = false in [settings] was ignored"


# -- an unreachable site ---------------------------------------------------------------------------


def crawl_unreachable_site(_: Site, ws: Workspace) -> Outcome:
    ws.write_config(config(source("csto-en", f"http://127.0.0.1:{free_port()}/news/", "en")))
    return ws.run("crawl", "-s", "RETRY_TIMES=0"), ws


@pytest.fixture(scope="module")
def unreachable(scenarios: dict[str, Future]) -> Outcome:
    return scenarios["unreachable"].result()


def test_an_unreachable_site_exits_1(unreachable):
    assert unreachable[0].returncode == 1


def test_an_unreachable_site_prints_no_traceback(unreachable):
    assert "Traceback" not in unreachable[0].stderr


def test_an_unreachable_site_names_the_source_and_the_reason(unreachable):
    lines = unreachable[0].stderr.strip().splitlines()
    assert any("csto-en" in line and "refused" in line.lower() for line in lines), lines


def test_an_unreachable_site_is_reported_in_one_line(unreachable):
    lines = unreachable[0].stderr.strip().splitlines()
    assert len(lines) == 1, lines


def test_an_unreachable_site_records_a_failed_run(unreachable):
    runs = list(unreachable[1].db().query("select source, status from crawl_runs"))
    assert runs == [{"source": "csto-en", "status": "failed"}]
