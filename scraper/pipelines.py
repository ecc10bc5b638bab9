"""Item pipelines: normalize an article, then store it (stages and priorities in settings.py)."""

from __future__ import annotations

import logging
from typing import Any

from scrapy.exceptions import DropItem

from scraper.article import normalize_article
from scraper.items import ArticleItem, RemovedItem

logger = logging.getLogger(__name__)


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
        article = item.normalized or normalize_article(item)
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
    """Writes articles in batches, each batch one transaction with the alerts its changes cause.

    An article waits at most STORE_BATCH_SECONDS (or until STORE_BATCH_SIZE are waiting, or the
    crawl ends) before it is written. A crash loses only the waiting articles, which the next run
    finds unstored and fetches again (a killed run is not complete, so its walk is resumed);
    an article change never commits without its alerts.
    """

    def __init__(self, crawler: Any) -> None:
        self.crawler = crawler
        self.batch_size = max(1, crawler.settings.getint("STORE_BATCH_SIZE", 250))
        self.batch_seconds = crawler.settings.getfloat("STORE_BATCH_SECONDS", 2.0)
        self.waiting: list[dict[str, Any]] = []
        self.timer: Any = None

    @classmethod
    def from_crawler(cls, crawler: Any) -> StorePipeline:
        return cls(crawler)

    def process_item(self, item: Any) -> Any:
        session = self.crawler.spider.session
        if isinstance(item, RemovedItem):  # applied at the end, if the source's listing answered
            session.runs[item.source].removals.append(item.article_id)
            return item
        self.waiting.append(item)
        if len(self.waiting) >= self.batch_size:
            self.flush()
        elif self.timer is None:
            from twisted.internet import reactor

            self.timer = reactor.callLater(self.batch_seconds, self.flush)
        return item

    def close_spider(self) -> None:
        self.flush()

    def flush(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        batch, self.waiting = self.waiting, []
        if not batch:
            return
        session = self.crawler.spider.session
        hooks = {name: session.change_hook(run) for name, run in session.runs.items()}

        def on_change(outcome: str, row: dict[str, Any]) -> None:
            hook = hooks.get(row["source"])
            if hook is not None:
                hook(outcome, row)

        try:
            outcomes = session.archive.store_articles(batch, on_change=on_change)
        except Exception as exc:  # anything: no article may be lost with it
            message = "could not store %d articles at once (%s); storing them one by one"
            logger.warning(message, len(batch), exc)
            outcomes = [self._store_one(session, article, on_change) for article in batch]
        for article, outcome in zip(batch, outcomes, strict=True):
            if outcome is not None:
                session.runs[article["source"]].counts[outcome] += 1

    @staticmethod
    def _store_one(session: Any, article: dict[str, Any], on_change: Any) -> str | None:
        """One article in its own transaction; a failure is an error, and a new article is
        fetched again by the next run (failed_articles)."""
        try:
            return session.archive.store_article(article, on_change=on_change)
        except Exception as exc:  # disk full, a hook's bug, a row SQLite rejects
            logger.error("%s: could not store %s: %s", article["source"], article["url"], exc)
            run = session.runs[article["source"]]
            run.counts["errors"] += 1
            if article.get("article_id") is None:
                run.article_failed(article["url"], f"not stored: {exc}")
            return None
