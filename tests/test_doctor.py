"""`newsmon doctor` and `newsmon add-source`: the real CLI against sites on 127.0.0.1."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterator

import pytest
from scrapy.http import HtmlResponse

from monitor.config import Selectors, SourceConfig, load_config
from monitor.doctor import Pages, diagnose
from monitor.probe import (
    DuplicateSource,
    ProbeResult,
    append_source,
    source_block,
    suggest_listing,
)
from monitor.replica import Replica, ReplicaServer
from scraper.extract import extract_listing
from tests.conftest import CSTO_SELECTORS, FAST_SETTINGS
from tests.sites import FeedSite, SiteServer, WordPressSite


@pytest.fixture
def replica() -> Iterator[ReplicaServer]:
    with ReplicaServer(Replica(articles=12, per_page=10), Replica(articles=4, language="ru")) as s:
        yield s


def config_text(server: ReplicaServer, en_selectors: str = CSTO_SELECTORS) -> str:
    return (
        'database = "newsmon.db"\n'
        f'[[sources]]\nname = "csto-en"\nstart_urls = ["{server.en_url}"]\n{en_selectors}'
        f'[[sources]]\nname = "csto-ru"\nstart_urls = ["{server.ru_url}"]\nlanguage = "ru"\n'
        + FAST_SETTINGS
    )


def field_lines(output: str) -> dict[str, str]:
    """'    title   <value>   configured selector ...' -> {"title": line} (article last wins)."""
    return {line.split()[0]: line for line in output.splitlines() if line.startswith("    ")}


# -- doctor ----------------------------------------------------------------------------------------


def test_doctor_on_configured_selectors_prints_each_field_with_its_origin(replica, workspace):
    workspace.write_config(config_text(replica))
    result = workspace.run("doctor", "--source", "csto-en")
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert f"listing: {replica.en_url}" in out
    for name in ("entries", "link", "title", "date", "summary", "next_page", "body"):
        assert "configured selector" in field_lines(out)[name], name
    assert "11 found" in field_lines(out)["entries"]  # ten a page and the pinned one
    assert "a.news-title::attr(href)" in field_lines(out)["link"]
    assert "result: ok" in out
    assert "suggested selectors" not in out  # every field is read by a working selector


def test_doctor_in_automatic_mode_says_automatic_and_suggests_stable_selectors(replica, workspace):
    workspace.write_config(config_text(replica))
    result = workspace.run("doctor", "--source", "csto-ru", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True
    origins = {(f["page"], f["name"]): f["origin"] for f in report["fields"]}
    assert origins[("listing", "entries")] == origins[("article", "body")] == "automatic"
    assert report["suggested_selectors"]["item"] == "div.news-item"
    assert report["suggested_selectors"]["article_body"] == "div.news-detail-text"


def test_doctor_warns_when_a_configured_selector_fell_back(replica, workspace):
    broken = CSTO_SELECTORS.replace('.news-detail h1::text"', '.no-such-title::text"')
    workspace.write_config(config_text(replica, broken))
    result = workspace.run("doctor", "--source", "csto-en")
    assert result.returncode == 0, result.stderr  # the fallback still found the title
    assert "fallback" in field_lines(result.stdout)["title"]
    assert "! selector `article_title` (.no-such-title::text) matched nothing" in result.stdout
    assert 'article_title = "h1::text"' in result.stdout  # a selector that works, suggested


def test_doctor_exits_non_zero_when_the_title_cannot_be_found(workspace):
    workspace.write_config('database = "newsmon.db"\n' + FAST_SETTINGS)
    with SiteServer(FeedSite()) as site:
        result = workspace.run(
            "doctor", site.url("/rss.xml"), "--article", site.url("/untitled.html")
        )
    assert result.returncode == 1
    assert "no article title found" in result.stdout


def test_doctor_on_a_bad_url_is_a_usage_error(workspace):
    workspace.write_config('database = "newsmon.db"\n')
    result = workspace.run("doctor", "ftp://example.test/")
    assert result.returncode == 2
    assert "URL must be an http(s) URL" in result.stderr


def test_diagnosis_of_pages_without_network():
    article = HtmlResponse(
        "http://x.test/a/",
        body=b"<html><head><title>Only a title</title></head><body></body></html>",
    )
    diagnosis = diagnose(Pages(SourceConfig("s", ("http://x.test/",)), article=article))
    assert not diagnosis.ok
    assert "article body" in diagnosis.missing
    assert any("listing not fetched" in problem for problem in diagnosis.problems)


# -- add-source ------------------------------------------------------------------------------------


def test_add_source_appends_a_block_that_crawl_then_uses(workspace):
    original = (
        'database = "newsmon.db"\n[[sources]]\nname = "old"\nstart_urls = ["http://127.0.0.1:9/"]\n'
    )
    workspace.write_config(original + FAST_SETTINGS)
    with SiteServer(WordPressSite()) as site:
        added = workspace.run("add-source", site.url("/blog/"), "--name", "riverside")
        assert added.returncode == 0, added.stderr
        text = workspace.config.read_text(encoding="utf-8")
        assert text.startswith(original + FAST_SETTINGS)  # nothing changed, only appended
        block = tomllib.loads(text)["sources"][-1]
        assert block["name"] == "riverside"
        assert block["selectors"]["item"] == "article.post"
        assert block["selectors"]["article_title"] == "h1.entry-title::text"

        crawl = workspace.run("crawl", "--source", "riverside", "--json")
        assert crawl.returncode == 0, crawl.stderr
        rows = workspace.db().query("select url, title from articles where source = 'riverside'")
        assert {row["url"]: row["title"] for row in rows} == {
            url: post.title for url, post in site.truth().items()
        }

        again = workspace.run("add-source", site.url("/blog/"), "--name", "riverside")
        assert again.returncode == 2
        assert "a source named 'riverside' exists already" in again.stderr
        assert workspace.config.read_text(encoding="utf-8") == text


def test_add_source_creates_a_missing_config_keeping_the_built_in_sources(tmp_path):
    path = tmp_path / "newsmon.toml"
    result = ProbeResult(name="agency", url="https://agency.test/news/", language="en")
    append_source(path, source_block(result), "agency")
    names = [source.name for source in load_config(path).sources]
    assert names == ["csto-en", "csto-ru", "agency"]
    with pytest.raises(DuplicateSource):
        append_source(path, source_block(result), "csto-en")


def test_source_block_quotes_values_as_toml():
    result = ProbeResult(
        name="a", url='https://x.test/?a=1&b="2"', selectors={"item": 'div[class="x"]'}
    )
    parsed = tomllib.loads(source_block(result))["sources"][0]
    assert parsed["start_urls"] == ['https://x.test/?a=1&b="2"']
    assert parsed["selectors"] == {"item": 'div[class="x"]'}


def test_suggested_selectors_of_a_page_with_a_base_href_find_the_detected_entries():
    items = "".join(
        f"<div class='item'><h3><a href='news/summit-story-{n}/'>Ministers met for summit talks"
        f" number {n}</a></h3><span class='date'>0{n + 1}.04.2024</span></div>"
        for n in range(4)
    )
    url = "http://x.test/en/news/"
    page = HtmlResponse(
        url,
        body=f"<html><head><base href='/'></head><body><div class='list'>{items}</div></body>"
        "</html>".encode(),
    )
    suggested = suggest_listing(page, url)
    assert "link" in suggested
    listing = extract_listing(page, url, Selectors(**suggested))
    assert {entry.url for entry in listing.entries} == {
        f"http://x.test/news/summit-story-{n}/" for n in range(4)
    }
