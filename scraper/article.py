"""An article page read into its item and normalized, without Scrapy.

The spider calls `read_article` in the crawl's own process; the page worker
(scraper/workers.py) calls it with `normalize_article` in its own, which never imports Scrapy.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from monitor.config import SourceConfig
from scraper.extract import HtmlPage, extract_article, extract_listing
from scraper.items import ArticleItem
from storage.normalize import (
    clean_content_hash,
    clean_text,
    find_date,
    normalize_whitespace,
    parse_date,
    prefer_canonical,
    section_from_url,
)

logger = logging.getLogger("scraper.pipelines")  # where these warnings were always logged


def read_article(
    page: Any,
    url: str,
    source: str,
    config: SourceConfig,
    meta: Mapping[str, Any],
    validators: Mapping[str, str | None],
    fetched_at: str,
) -> tuple[ArticleItem, dict[str, str]]:
    """An article page's item, and where each field came from ("selector" or "fallback").

    `page` is a Scrapy HtmlResponse or an extract.HtmlPage; `meta` is its request's meta (the
    listing entry, the canonical URL it was listed under, a stored article's id).
    """
    fields = extract_article(page, url, config.selectors)
    entry = meta.get("entry")
    item = ArticleItem(
        source=source,
        url=url,
        language=config.language,
        title=fields.title,
        date_text=fields.date,
        listing_title=entry.title if entry else None,
        listing_date=entry.date if entry else None,
        summary=entry.summary if entry else None,
        body_html=fields.body_html,
        canonical=fields.canonical,
        attachments=fields.attachments,
        fetched_at=fetched_at,
        listing_url=meta.get("canonical"),
        article_id=meta.get("article_id"),
        etag=validators.get("etag"),
        last_modified=validators.get("last_modified"),
    )
    return item, fields.origin


def _date(text: str | None, languages: list[str] | None) -> str | None:
    """A date field may hold just the date or a label around it ("Published: 06.04.2022")."""
    return parse_date(text, languages) or find_date(text, languages)


def normalize_article(item: ArticleItem) -> dict[str, Any]:
    """The stored form of an article: canonical URL, ISO date, clean text and content hash."""
    url = prefer_canonical(item.url, item.canonical)
    title = normalize_whitespace(item.title or item.listing_title)
    body = clean_text(item.body_html) if item.body_html else ""
    languages = [item.language] if item.language else None
    published = _date(item.date_text, languages) or _date(item.listing_date, languages)
    if published is None:
        logger.warning("%s: no parseable date on %s (%r)", item.source, url, item.date_text)
    return {
        "source": item.source,
        "url": url,
        "title": title or None,
        "published": published,
        "summary": normalize_whitespace(item.summary) or None,
        "body": body,
        "language": item.language,
        "section": section_from_url(url),
        "attachments": item.attachments,
        "content_hash": clean_content_hash(title, body),
        "fetched_at": item.fetched_at,
        "article_id": item.article_id,
        "alias": item.listing_url if item.listing_url != url else None,
        "etag": item.etag,
        "last_modified": item.last_modified,
    }


def page_reader(sources: Mapping[str, SourceConfig]) -> Callable[[Mapping[str, Any]], Any]:
    """The page worker's handler (scraper/workers.py): a page in (spiders/news.py `_page`); for a
    listing page its Listing, for an article page its item, normalized, and where its fields came
    from. The item leaves its HTML behind: the pipeline needs only the normalized text."""
    from w3lib.encoding import html_to_unicode

    def read(page: Mapping[str, Any]) -> Any:
        text = page.get("text")
        if text is None:  # bytes: decoded as Scrapy's response.text decodes them
            text = html_to_unicode(f"charset={page['encoding']}", page["body"])[1]
        html = HtmlPage(page["url"], text)
        config = sources[page["source"]]
        if page["kind"] == "listing":
            return extract_listing(html, page["url"], config.selectors)
        item, origin = read_article(
            html,
            page["url"],
            page["source"],
            config,
            page["meta"],
            page["validators"],
            page["fetched_at"],
        )
        item.normalized = normalize_article(item)
        item.body_html = None
        return item, origin

    return read
