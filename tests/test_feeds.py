"""Feeds and sitemaps as listings: parsing, discovery, config keys, and crawls through the CLI."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pytest
from scrapy.http import HtmlResponse, Response, XmlResponse

from monitor.config import ConfigError, load_config
from scraper import feeds
from storage.normalize import parse_date
from tests.conftest import FAST_SETTINGS, Workspace
from tests.sites import FeedSite, SitemapSite, SiteServer, WordPressSite

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Agency</title>
<entry><title>Talks &amp; consultations</title><link href="/news/talks/"/><id>tag:x,1</id>
<updated>2024-04-22T10:00:00+03:00</updated>
<summary type="html">&lt;p&gt;Talks were &lt;b&gt;held&lt;/b&gt;.&lt;/p&gt;</summary></entry>
<entry><title>No link</title><id>tag:x,2</id></entry>
</feed>"""


def offline(site):
    site.base_url = "http://news.test"
    return site


# -- RSS / Atom ------------------------------------------------------------------------------------


def test_rss_items_become_entries_with_url_title_date_and_summary():
    site = offline(WordPressSite())
    entries = feeds.parse_feed(site.route("/feed/").encoded(), site.url("/feed/"))
    assert [e.url for e in entries] == [site.article_url(p) for p in site.posts[:10]]
    first, post = entries[0], site.posts[0]
    assert first.title == post.title
    assert first.date == post.published.isoformat()
    assert first.summary == post.summary


def test_atom_entries_resolve_relative_links_keep_the_offset_and_clean_the_summary():
    (entry,) = feeds.parse_feed(ATOM.encode(), "http://agency.test/atom.xml")
    assert entry.url == "http://agency.test/news/talks/"
    assert entry.title == "Talks & consultations"
    assert entry.date == "2024-04-22T10:00:00+03:00"
    assert entry.summary == "Talks were held."
    assert feeds.is_feed(ATOM) and not feeds.is_feed("<html><body><p>x</p></body></html>")


def test_discovery_prefers_the_sections_own_feed_and_skips_comment_feeds():
    head = (
        '<link rel="alternate" type="application/rss+xml" title="Site Feed" href="/feed/">'
        '<link rel="alternate" type="application/rss+xml" title="Comments Feed" '
        'href="/comments/feed/"><link rel="alternate" type="application/atom+xml" '
        'href="/category/news/feed/"><link rel="alternate" hreflang="ru" href="/ru/">'
    )
    body = f"<html><head>{head}</head><body></body></html>".encode()
    response = HtmlResponse("http://x/category/news/", body=body)
    assert feeds.discover_feeds(response, response.url) == [
        "http://x/category/news/feed/",
        "http://x/feed/",
    ]


# -- sitemaps --------------------------------------------------------------------------------------


def test_news_sitemap_gives_titles_and_publication_dates_newest_first():
    site = offline(SitemapSite())
    entries, children = feeds.parse_sitemap(
        site.route("/sitemap-news.xml").encoded(), site.url("/sitemap-news.xml")
    )
    assert children == []
    assert [e.url for e in entries] == [site.article_url(p) for p in site.posts]
    assert [(e.title, parse_date(e.date)[:10]) for e in entries] == [
        (p.title, p.date) for p in site.posts
    ]


def test_sitemap_index_lists_its_article_sitemaps_newest_first_without_page_sitemaps():
    site = offline(SitemapSite())
    entries, children = feeds.parse_sitemap(
        site.route("/sitemap.xml").encoded(), site.url("/sitemap.xml")
    )
    assert entries == []
    assert children == [site.url("/sitemap-news.xml")]


def test_plain_sitemap_with_lastmod_and_a_gzipped_body():
    xml = (
        b'<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">'
        b"<url><loc>http://x/a/</loc><lastmod>2024-01-02</lastmod></url>"
        b"<url><loc>http://x/b/</loc><lastmod>2024-03-04T10:00:00Z</lastmod></url></urlset>"
    )
    response = Response("http://x/sitemap.xml.gz", body=gzip.compress(xml))
    body = feeds.sitemap_body(response)
    entries, _ = feeds.parse_sitemap(body, response.url)
    assert [(e.url, e.date) for e in entries] == [
        ("http://x/b/", "2024-03-04T10:00:00Z"),
        ("http://x/a/", "2024-01-02"),
    ]
    assert feeds.sitemap_body(XmlResponse("http://x/s.xml", body=b"not xml")) is None


# -- configuration ---------------------------------------------------------------------------------


def write(tmp_path: Path, block: str) -> Path:
    path = tmp_path / "newsmon.toml"
    path.write_text(f'[[sources]]\nname = "s"\n{block}', encoding="utf-8")
    return path


def test_a_source_may_be_listed_by_its_feed_or_sitemap_alone(tmp_path):
    source = load_config(write(tmp_path, 'feed_url = "https://x.test/rss.xml"\n')).sources[0]
    assert (source.start_urls, source.feed_url, source.automatic) == (
        (),
        "https://x.test/rss.xml",
        True,
    )
    source = load_config(write(tmp_path, 'sitemap_url = "https://x.test/s.xml"\n')).sources[0]
    assert source.sitemap_url == "https://x.test/s.xml"


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ('feed_url = "ftp://x.test/rss.xml"\n', "key 'feed_url': only http(s) URLs"),
        ('sitemap_url = "file:///etc/passwd"\n', "key 'sitemap_url': only http(s) URLs"),
        ("feed_url = 5\n", "key 'feed_url' must be"),
        ('language = "en"\n', "key 'start_urls' must be a list"),
    ],
)
def test_feed_and_sitemap_urls_are_validated_like_start_urls(tmp_path, block, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(write(tmp_path, block))


# -- crawls through the real CLI -------------------------------------------------------------------


def config_text(block: str) -> str:
    return f'database = "newsmon.db"\n[[sources]]\nname = "src"\n{block}' + FAST_SETTINGS


def stored(workspace: Workspace) -> dict[str, dict]:
    rows = workspace.db().query("select url, title, published, body, summary from articles")
    return {row["url"]: row for row in rows}


def test_feed_url_source_stores_new_items_with_full_bodies_from_the_article_pages(workspace):
    with SiteServer(FeedSite()) as site:
        workspace.write_config(config_text(f'feed_url = "{site.url("/rss.xml")}"\n'))
        first = workspace.run("crawl", "--json")
        assert first.returncode == 0, first.stderr
        rows = stored(workspace)
        assert set(rows) == set(site.truth())
        for url, post in site.truth().items():
            assert rows[url]["title"] == post.title
            assert rows[url]["published"][:10] == post.date
            assert rows[url]["body"] == "\n\n".join(post.paragraphs)  # the feed has only a lead
            assert rows[url]["summary"] == post.summary

        fresh = site.publish("Harbour master announces new mooring fees")
        site.requests.clear()
        second = workspace.run("crawl", "--json")
        assert second.returncode == 0, second.stderr
        assert set(stored(workspace)) == set(site.truth())
        article_requests = [path for path in site.requests if path.startswith("/news/")]
        assert article_requests == [site.post_path(fresh)]  # only the new item was fetched


def test_sitemap_url_source_walks_the_index_to_the_news_sitemap(workspace):
    with SiteServer(SitemapSite()) as site:
        workspace.write_config(config_text(f'sitemap_url = "{site.url("/sitemap.xml")}"\n'))
        result = workspace.run("crawl", "--json")
        assert result.returncode == 0, result.stderr
        rows = stored(workspace)
        assert set(rows) == set(site.truth())  # /about and /contacts never stored
        for url, post in site.truth().items():
            assert (rows[url]["title"], rows[url]["published"][:10]) == (post.title, post.date)
        assert "/sitemap-pages.xml" not in site.requests


def test_automatic_mode_discovers_the_rss_link_of_a_javascript_only_start_page(workspace):
    with SiteServer(FeedSite()) as site:
        workspace.write_config(config_text(f'start_urls = ["{site.url("/")}"]\n'))
        result = workspace.run("crawl", "--json")
        assert result.returncode == 0, result.stderr
        assert set(stored(workspace)) == set(site.truth())
        assert "/rss.xml" in site.requests
