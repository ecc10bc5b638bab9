"""Automatic mode: sites newsmon never saw, crawled from nothing but their URL (issue 7).

Pages come from tests/sites.py (WordPress-style blog, Drupal-like portal, a redesigned site) and
monitor.replica (Bitrix); crawls run the real CLI in a subprocess against them on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
import trafilatura
from scrapy.http import HtmlResponse

from monitor.config import Selectors
from monitor.replica import Replica, ReplicaServer, render_article, render_listing
from scraper import auto
from scraper.extract import article_body_fallback, extract_article, extract_listing
from storage.normalize import clean_text, normalize_whitespace, parse_date
from tests.conftest import CSTO_SELECTORS, FAST_SETTINGS, Workspace
from tests.sites import (
    FeedSite,
    PortalSite,
    Post,
    Site,
    SitemapSite,
    SiteServer,
    SwitchSite,
    WordPressSite,
    body_scores,
)

WORDPRESS_SELECTORS = """
[sources.selectors]
item = "article.post"
link = "h2.entry-title a::attr(href)"
title = "h2.entry-title a::text"
date = "time.entry-date::attr(datetime)"
summary = ".entry-summary p"
next_page = ".nav-previous a::attr(href)"
article_title = "h1.entry-title::text"
article_date = "time.entry-date::attr(datetime)"
article_body = ".entry-content"
"""


def page(site: Site, path: str) -> HtmlResponse:
    """A site's page as Scrapy would hand it to the spider (no network)."""
    answer = site.route(path)
    return HtmlResponse(site.url(path), body=answer.encoded(), encoding="utf-8")


def offline(site: Site) -> Site:
    site.base_url = "http://news.test"
    return site


def source_config(name: str, url: str, extra: str = "") -> str:
    return f'database = "newsmon.db"\n[[sources]]\nname = "{name}"\nstart_urls = ["{url}"]\n' + (
        extra + FAST_SETTINGS
    )


def score(workspace: Workspace, truth: dict[str, Post], source: str) -> tuple[int, list[str]]:
    """(articles stored with the right title and date, URLs stored that are not articles)."""
    rows = workspace.db().query(
        "select url, title, published from articles where source = ?", [source]
    )
    right, strangers = 0, []
    for row in rows:
        post = truth.get(row["url"])
        if post is None:
            strangers.append(row["url"])
        elif row["title"] == post.title and (row["published"] or "")[:10] == post.date:
            right += 1
    return right, strangers


def replica_truth(server: ReplicaServer, replica: Replica, prefix: str) -> dict[str, Post]:
    return {
        f"{server.base_url}{prefix}/news/news_odkb/{a.slug}/": Post(
            a.id, a.slug, a.title, datetime(*a.published.timetuple()[:3], tzinfo=UTC), a.paragraphs
        )
        for a in replica.articles()
    }


@pytest.fixture
def wordpress() -> Iterator[WordPressSite]:
    with SiteServer(WordPressSite()) as site:
        yield site


# -- listing pages ---------------------------------------------------------------------------------


def test_wordpress_listing_entries_are_the_posts_with_titles_and_dates():
    site = offline(WordPressSite())
    entries = auto.detect_entries(page(site, "/blog/"), site.url("/blog/"))
    posts = site.posts[:5]
    assert [e.url for e in entries] == [site.article_url(p) for p in posts]
    assert [e.title for e in entries] == [p.title for p in posts]
    assert [parse_date(e.date)[:10] for e in entries] == [p.date for p in posts]


def test_links_to_tags_categories_authors_search_archives_and_downloads_are_never_entries():
    site = offline(WordPressSite())
    for path in ("/blog/", "/blog/page/3/", "/tag/budget/", "/?s=budget"):
        urls = [e.url for e in auto.detect_entries(page(site, path), site.url(path))]
        assert urls and set(urls) <= set(site.truth()), path


@pytest.mark.parametrize(
    "url",
    [
        "http://x/tag/budget/",
        "http://x/category/news/",
        "http://x/author/editor/",
        "http://x/?s=budget",
        "http://x/search/?q=x",
        "http://x/2024/04/",
        "http://x/wp-content/uploads/2024/04/report.pdf",
        "http://x/feed/",
        "http://x/news/photo.jpg",
    ],
)
def test_non_article_urls(url):
    assert auto.is_non_article_url(url)


@pytest.mark.parametrize(
    "url", ["http://x/2024/04/22/council-approves-budget/", "http://x/news/news_odkb/a-b-12/"]
)
def test_article_urls(url):
    assert not auto.is_non_article_url(url)


def test_bitrix_listing_in_automatic_mode_matches_the_configured_selectors():
    replica = Replica(articles=25)
    number, pages, items = replica.listing(1)
    html = render_listing(replica, number, pages, items, replica.pinned_article(), "")
    response = HtmlResponse("http://news.test/news/", body=html.encode(), encoding="utf-8")
    configured = extract_listing(response, response.url, Selectors(item="div.news-item"))
    automatic = extract_listing(response, response.url, Selectors())
    assert [e.url for e in automatic.entries] == [e.url for e in configured.entries]
    assert automatic.next_page == "http://news.test/news/?PAGEN_1=2"
    assert automatic.origin == {"item": "automatic", "next_page": "automatic"}


@pytest.mark.parametrize(
    ("url", "links", "expected"),
    [
        ("http://x/news/", ["?PAGEN_1=2", "?PAGEN_1=3"], "http://x/news/?PAGEN_1=2"),
        ("http://x/news/?PAGEN_1=2", ["?PAGEN_1=1", "?PAGEN_1=3"], "http://x/news/?PAGEN_1=3"),
        ("http://x/blog/", ["/blog/page/2/", "/blog/page/3/"], "http://x/blog/page/2/"),
        ("http://x/blog/page/2/", ["/blog/", "/blog/page/3/"], "http://x/blog/page/3/"),
        ("http://x/novosti/", ["?page=1", "?page=2"], "http://x/novosti/?page=1"),
        ("http://x/novosti/?page=2", ["?page=1"], None),
        ("http://x/news/", ["ftp://x/news/?PAGEN_1=2", "?PAGEN_1=3"], "http://x/news/?PAGEN_1=3"),
        ("http://x/news/", ["javascript:go('?PAGEN_1=2')"], None),
    ],
)
def test_numbered_pagination(url, links, expected):
    anchors = "".join(f'<a href="{href}">{n}</a> ' for n, href in enumerate(links, 2))
    response = HtmlResponse(url, body=f"<html><body>{anchors}</body></html>".encode())
    assert auto.next_page(response, url) == expected


def test_next_page_by_label_in_russian():
    body = '<html><body><a href="/n/?page=5">следующая ›</a></body></html>'
    response = HtmlResponse("http://x/n/", body=body.encode(), encoding="utf-8")
    assert auto.next_page(response, response.url) == "http://x/n/?page=5"


# -- article pages ---------------------------------------------------------------------------------


def test_title_is_the_h1_the_page_title_names_not_the_site_name():
    body = (
        "<html><head><title>Council approves budget – Riverside</title>"
        '<meta property="og:title" content="Council approves budget – Riverside">'
        '<meta property="og:site_name" content="Riverside"></head><body>'
        "<h1>Riverside</h1><h1>Council approves budget</h1></body></html>"
    )
    response = HtmlResponse("http://x/a/", body=body.encode(), encoding="utf-8")
    assert auto.article_title(response) == "Council approves budget"


def test_og_title_loses_its_site_name_when_no_h1_matches():
    body = (
        '<html><head><meta property="og:title" content="Budget approved | Riverside News">'
        "</head><body><p>text</p></body></html>"
    )
    response = HtmlResponse("http://x/a/", body=body.encode(), encoding="utf-8")
    assert auto.article_title(response) == "Budget approved"


def test_the_projects_date_rules_come_before_trafilaturas():
    """A Russian date under the title wins over the sidebar's ISO dates htmldate would pick."""
    site = offline(PortalSite())
    post = site.posts[3]
    fields = extract_article(page(site, site.post_path(post)), site.article_url(post), Selectors())
    assert parse_date(fields.date) == post.date


def test_a_time_inside_the_article_wins_over_a_time_in_the_sidebar():
    body = (
        '<html><body><aside><time datetime="2020-01-01">old</time></aside><article>'
        '<h1>Story</h1><time datetime="2024-04-22T10:00:00+00:00">22 April</time>'
        "<p>Text of the story that is long enough.</p></article></body></html>"
    )
    response = HtmlResponse("http://x/a/", body=body.encode(), encoding="utf-8")
    fields = extract_article(response, response.url, Selectors())
    assert fields.date == "2024-04-22T10:00:00+00:00"
    assert fields.origin["article_date"] == "automatic"


def _article_pages() -> Iterator[tuple[str, HtmlResponse, Post]]:
    sites: list[Site] = [WordPressSite(), PortalSite(), SitemapSite(), FeedSite()]
    for version in (1, 2):
        switch = SwitchSite()
        switch.version = version
        sites.append(switch)
    for site in sites:
        offline(site)
        for post in site.posts:
            yield type(site).__name__, page(site, site.post_path(post)), post
    for language in ("en", "ru"):
        replica = Replica(articles=12, language=language)
        for a in replica.articles():
            html = render_article(replica, a, replica.latest(a.id), "http://news.test", "")
            url = f"http://news.test/news/news_odkb/{a.slug}/"
            response = HtmlResponse(url, body=html.encode("utf-8"), encoding="utf-8")
            post = Post(a.id, a.slug, a.title, datetime.now(UTC), a.paragraphs)
            yield f"replica-{language}", response, post


def test_body_text_is_at_least_as_good_as_trafilaturas_own_output_on_every_site():
    """Share of the true paragraphs' words kept, share of the page's other words left out."""
    totals: dict[str, list[float]] = {"ours": [0, 0, 0], "trafilatura": [0, 0, 0]}
    for _kind, response, post in _article_pages():
        html = response.text
        ours = clean_text(article_body_fallback(response))
        theirs = trafilatura.extract(html, url=response.url) or ""
        for name, text in (("ours", ours), ("trafilatura", theirs)):
            recall, clean = body_scores(html, text, post)
            totals[name][0] += recall
            totals[name][1] += clean
            totals[name][2] += 1
    ours_recall, ours_clean, n = totals["ours"]
    their_recall, their_clean, _ = totals["trafilatura"]
    assert n >= 80
    assert ours_recall >= their_recall
    assert ours_clean >= their_clean
    assert ours_recall / n >= 0.98 and ours_clean / n >= 0.98


def test_body_leaves_out_the_title_the_date_line_and_latest_news():
    replica = Replica(articles=5)
    a = replica.article(3)
    html = render_article(replica, a, replica.latest(a.id), "http://news.test", "")
    response = HtmlResponse("http://news.test/n/", body=html.encode(), encoding="utf-8")
    expected = "\n\n".join(normalize_whitespace(p) for p in a.paragraphs)
    assert clean_text(auto.main_text_html(response)) == expected


# -- crawls through the real CLI -------------------------------------------------------------------


def test_wordpress_blog_is_crawled_correctly_with_selectors_from_the_config_alone(
    wordpress, workspace
):
    workspace.write_config(source_config("wp", wordpress.url("/blog/"), WORDPRESS_SELECTORS))
    result = workspace.run("crawl", "--json")
    assert result.returncode == 0, result.stderr
    right, strangers = score(workspace, wordpress.truth(), "wp")
    assert (right, strangers) == (len(wordpress.posts), [])
    bodies = {r["url"]: r["body"] for r in workspace.db().query("select url, body from articles")}
    for url, post in wordpress.truth().items():
        assert all(paragraph in bodies[url] for paragraph in post.paragraphs)


def test_wordpress_blog_in_automatic_mode_stores_every_post_and_nothing_else(wordpress, workspace):
    workspace.write_config(source_config("wp", wordpress.url("/blog/")))
    result = workspace.run("crawl", "--json")
    assert result.returncode == 0, result.stderr
    right, strangers = score(workspace, wordpress.truth(), "wp")
    assert right >= 0.9 * len(wordpress.posts)
    assert strangers == []  # no tag, category, author, search, archive page or PDF
    assert "/feed/" in wordpress.requests  # the feed found on the page was read too
    rows = workspace.db().query("select url, body from articles")
    for row in rows:
        post = wordpress.truth()[row["url"]]
        assert row["body"] == "\n\n".join(post.paragraphs)  # no share box, related posts, comments


def test_bitrix_section_in_automatic_mode(workspace):
    server = ReplicaServer(Replica(articles=25, per_page=10), Replica(articles=12, language="ru"))
    with server:
        workspace.write_config(
            'database = "newsmon.db"\n'
            f'[[sources]]\nname = "en"\nstart_urls = ["{server.en_url}"]\n'
            f'[[sources]]\nname = "ru"\nstart_urls = ["{server.ru_url}"]\n' + FAST_SETTINGS
        )
        result = workspace.run("crawl", "--json")
        assert result.returncode == 0, result.stderr
        for name, replica, prefix in (
            ("en", server.replica_en, ""),
            ("ru", server.replica_ru, "/ru"),
        ):
            truth = replica_truth(server, replica, prefix)
            right, strangers = score(workspace, truth, name)
            assert right >= 0.9 * len(truth), name
            assert strangers == [], name


def test_drupal_like_portal_in_automatic_mode(workspace):
    with SiteServer(PortalSite()) as site:
        workspace.write_config(source_config("portal", site.url("/novosti/")))
        result = workspace.run("crawl", "--json")
        assert result.returncode == 0, result.stderr
        right, strangers = score(workspace, site.truth(), "portal")
        assert right >= 0.9 * len(site.posts) and strangers == []


def test_after_a_redesign_selectors_stop_matching_check_warns_and_the_fallback_still_works(
    workspace,
):
    alerts = workspace.path / "alerts.jsonl"
    channel = f'[[alerts]]\ntype = "jsonl"\npath = "{alerts}"\nevents = ["new", "source_error"]\n'
    with SiteServer(SwitchSite()) as site:
        workspace.write_config(
            source_config("press", site.url("/press/"), channel + CSTO_SELECTORS)
        )
        first = workspace.run("check")
        assert first.returncode == 0, first.stderr
        assert score(workspace, site.truth(), "press") == (len(site.posts), [])

        site.version = 2  # the redesign: none of the configured selectors matches any more
        fresh = site.publish("Port authority opens a new ferry terminal")
        second = workspace.run("check", "--json")

        assert second.returncode == 0, second.stderr
        events = [json.loads(line) for line in alerts.read_text().splitlines()]
        reasons = [e["reason"] for e in events if e["event"] == "source_error"]
        assert any("selector `item` matched nothing" in reason for reason in reasons)
        assert any("selector `article_title` matched nothing" in r for r in reasons)
        new = [e for e in events if e["event"] == "new"]
        assert [e["title"] for e in new] == [fresh.title]
        row = (
            workspace.db()
            .execute("select title, body from articles where url = ?", [site.article_url(fresh)])
            .fetchone()
        )
        assert row == (fresh.title, "\n\n".join(fresh.paragraphs))
