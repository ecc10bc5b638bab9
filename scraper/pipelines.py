"""Item pipelines: normalize an article, then store it (stages and priorities in settings.py)."""

from __future__ import annotations

import logging
from typing import Any

from scrapy.exceptions import DropItem

from scraper.items import ArticleItem, RemovedItem
from storage.normalize import (
    clean_text,
    content_hash,
    find_date,
    normalize_whitespace,
    parse_date,
    prefer_canonical,
    section_from_url,
)

logger = logging.getLogger(__name__)


def _date(text: str | None, languages: list[str] | None) -> str | None:
    """A date field may hold just the date or a label around it ("Published: 06.04.2022")."""
    return parse_date(text, languages) or find_date(text, languages)


def normalize_article(item: ArticleItem) -> dict[str, Any]:
    """The stored form of an article: canonical URL, ISO date, clean text and content hash."""
    url = prefer_canonical(item.url, item.canonical)
    title = normalize_whitespace(item.title or item.listing_title) or None
    body = clean_text(item.body_html) if item.body_html else ""
    languages = [item.language] if item.language else None
    published = _date(item.date_text, languages) or _date(item.listing_date, languages)
    if published is None:
        logger.warning("%s: no parseable date on %s (%r)", item.source, url, item.date_text)
    return {
        "source": item.source,
        "url": url,
        "title": title,
        "published": published,
        "summary": normalize_whitespace(item.summary) or None,
        "body": body,
        "language": item.language,
        "section": section_from_url(url),
        "attachments": item.attachments,
        "content_hash": content_hash(title, body),
        "fetched_at": item.fetched_at,
        "article_id": item.article_id,
        "alias": item.listing_url if item.listing_url != url else None,
        "etag": item.etag,
        "last_modified": item.last_modified,
    }


class NormalizePipeline:
    """Turns raw page fields into the archive's normalized form; drops pages with no article."""

    def __init__(self, crawler: Any) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Any) -> NormalizePipeline:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        if not isinstance(item, ArticleItem):
            return item
        article = normalize_article(item)
        problem = _unusable(item, article)
        if problem:
            run = self.crawler.spider.session.runs[item.source]
            run.counts["errors"] += 1
            if item.article_id is None:  # a new article: try again next run
                run.article_failed(item.url, problem)
            raise DropItem(f"{item.source}: {problem} on {item.url}")
        return article


def _unusable(item: ArticleItem, article: dict[str, Any]) -> str | None:
    """An empty, garbled or truncated page is an error, even when its listing named it."""
    if not article["title"]:
        return "no title found"
    if not article["body"] and not item.title:
        return "no article content found"
    return None


class StorePipeline:
    """Writes each article in its own transaction, with the alerts its change causes."""

    def __init__(self, crawler: Any) -> None:
        self.crawler = crawler

    @classmethod
    def from_crawler(cls, crawler: Any) -> StorePipeline:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        session = self.crawler.spider.session
        if isinstance(item, RemovedItem):  # applied at the end, if the source's listing answered
            session.runs[item.source].removals.append(item.article_id)
            return item
        run = session.runs[item["source"]]
        hook = session.change_hook(run)
        outcome = session.archive.store_article(item, now=item["fetched_at"], on_change=hook)
        run.counts[outcome] += 1
        return item
