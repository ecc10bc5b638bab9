"""Feeds and sitemaps as listings: RSS/Atom through feedparser, sitemaps through Scrapy's parser.

Both give `Entry` objects like a listing page does (url, title, date, summary), newest first
where the source says when; the spider then fetches each new article page for its full body.
Also: discovery of a page's `<link rel="alternate" type="application/rss+xml">` feeds.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from parsel import Selector
from scrapy.utils.gz import gunzip, gzip_magic_number
from scrapy.utils.sitemap import Sitemap
from w3lib.url import safe_url_string

from scraper.extract import Entry, absolute_link, link_base
from storage.normalize import clean_text, is_http_url, normalize_whitespace

logger = logging.getLogger(__name__)

FEED_TYPES = ("application/rss+xml", "application/atom+xml", "application/feed+json")
NEWS_NS_FIELDS = ("publication_date", "title")  # children of <news:news> kept by NewsSitemap
MAX_SITEMAP_BYTES = 50 * 1024 * 1024  # the sitemap protocol's own limit for one file
# Child sitemaps of an index that list static pages, taxonomies, people or media, not articles
# (Yoast's page-sitemap.xml, WordPress core's wp-sitemap-taxonomies-category-1.xml, ...).
NON_ARTICLE_SITEMAP = re.compile(
    r"page|categor|tag|taxonom|author|user|image|video|product|attachment", re.IGNORECASE
)


# -- RSS / Atom ------------------------------------------------------------------------------------


def parse_feed(body: bytes | str, url: str) -> list[Entry]:
    """The items of an RSS or Atom document, in feed order (links resolved against `url`)."""
    import feedparser  # here: most crawls read no feed, and importing it takes ~15 ms

    parsed = feedparser.parse(body, response_headers={"content-location": url})
    entries = []
    for item in parsed.entries:
        link = _item_link(item, url)
        if link is None:
            continue
        summary = item.get("summary") or ""  # HTML, as feeds carry it
        entries.append(
            Entry(
                url=link,
                title=normalize_whitespace(item.get("title")) or None,
                date=_item_date(item),
                summary=normalize_whitespace(clean_text(summary)) or None,
            )
        )
    return entries


def is_feed(body: bytes | str) -> bool:
    """True when feedparser recognizes RSS or Atom (however sloppy), not HTML."""
    import feedparser

    parsed = feedparser.parse(body)
    return bool(parsed.version) and bool(parsed.entries or parsed.feed.get("title"))


def _item_link(item: Any, feed_url: str) -> str | None:
    candidates = [item.get("link")]
    candidates += [
        link.get("href") for link in item.get("links", []) if link.get("rel") in (None, "alternate")
    ]
    if item.get("guidislink"):
        candidates.append(item.get("id"))
    for candidate in candidates:
        if candidate:
            link = urljoin(feed_url, candidate.strip())
            if is_http_url(link):
                return link.split("#", 1)[0]
    return None


def _item_date(item: Any) -> str | None:
    """ISO 8601 with the feed's own offset where it can be read, else feedparser's UTC reading."""
    for key in ("published", "updated", "created"):
        raw = item.get(key)
        if not raw:
            continue
        try:
            return parsedate_to_datetime(raw).isoformat()  # RFC 822 (RSS)
        except (TypeError, ValueError, IndexError):
            pass
        try:
            return datetime.fromisoformat(raw.replace("Z", "+00:00")).isoformat()  # Atom
        except ValueError:
            pass
        parsed = item.get(f"{key}_parsed")
        if parsed:
            return datetime(*parsed[:6], tzinfo=UTC).isoformat()
        return raw
    return None


def discover_feeds(page: Any, url: str) -> list[str]:
    """`<link rel="alternate">` feeds of a page, the page's own section first, comments last."""
    selector = page if isinstance(page, Selector) else page.selector
    base = link_base(selector, url)
    found = []
    for link in selector.xpath("//link[@href][contains(concat(' ', @rel, ' '), ' alternate ')]"):
        kind = (link.attrib.get("type") or "").split(";")[0].strip().lower()
        if kind not in FEED_TYPES[:2]:
            continue
        joined = absolute_link(link.attrib["href"], base, url)
        if joined is None:
            continue
        href = safe_url_string(joined)  # no raw controls
        if is_http_url(href) and href not in [f for f, _ in found]:
            found.append((href, (link.attrib.get("title") or "").lower()))
    page_dir = urlsplit(url).path.rstrip("/") + "/"
    feeds = [
        href
        for href, title in found
        if "comment" not in title and "комментар" not in title and "/comments/" not in href
    ]
    # A section's own feed ("/category/news/feed/" on "/category/news/") before the site's.
    return sorted(feeds, key=lambda href: not urlsplit(href).path.startswith(page_dir))


# -- sitemaps --------------------------------------------------------------------------------------


class NewsSitemap(Sitemap):
    """Scrapy's Sitemap, also keeping `<news:news>`'s publication_date and title for each URL."""

    __slots__ = ()

    def _process_sitemap_element(self, elem: Any) -> dict[str, Any] | None:
        nested = {}
        for child in elem:
            if self._get_tag_name(child) == "news":
                for field in child.iter():
                    name = self._get_tag_name(field)
                    if name in NEWS_NS_FIELDS and field.text:
                        nested[f"news_{name}"] = field.text.strip()
        found = super()._process_sitemap_element(elem)
        if found is not None:
            found.update(nested)
        return found


def sitemap_body(response: Any) -> bytes | None:
    """The XML of a sitemap response, gunzipped when it is a .xml.gz file; None if not XML."""
    body = response.body
    if gzip_magic_number(response):
        try:
            body = gunzip(body, max_size=MAX_SITEMAP_BYTES)
        except Exception:  # truncated or oversized archive
            return None
    return body if body.lstrip()[:1] == b"<" else None


def parse_sitemap(body: bytes, url: str) -> tuple[list[Entry], list[str]]:
    """(article entries newest first, child sitemap URLs newest first) of a sitemap or index."""
    try:
        sitemap = NewsSitemap(body)
    except Exception:  # not XML at all
        logger.debug("not a sitemap: %s", url, exc_info=True)
        return [], []
    rows = list(sitemap)
    if sitemap.type == "sitemapindex":
        children = sorted(rows, key=lambda row: row.get("lastmod") or "", reverse=True)
        locs = [urljoin(url, row["loc"]) for row in children if row.get("loc")]
        locs = [loc for loc in locs if is_http_url(loc)]  # never file:, ftp:, ...
        return [], [loc for loc in locs if not NON_ARTICLE_SITEMAP.search(loc.rsplit("/", 1)[-1])]
    entries = []
    for row in rows:
        loc = urljoin(url, row.get("loc") or "")
        if not is_http_url(loc):
            continue
        entries.append(
            Entry(
                url=loc,
                title=normalize_whitespace(row.get("news_title")) or None,
                date=row.get("news_publication_date") or row.get("lastmod") or None,
            )
        )
    if any(entry.date for entry in entries):
        entries.sort(key=lambda entry: _sort_key(entry.date), reverse=True)
    return entries, []


def _sort_key(value: str | None) -> str:
    """Sitemap dates are W3C datetimes: their UTC reading sorts; unreadable ones go last."""
    if not value:
        return ""
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return ""
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).isoformat()
