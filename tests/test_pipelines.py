"""The store stage of a crawl on a real archive: batches, outcomes, and what a failure leaves."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from scrapy.settings import Settings

from monitor.config import Config
from scraper.pipelines import StorePipeline
from scraper.session import CrawlSession
from storage.normalize import content_hash

URL = "https://en.odkb-csto.org/news/news_odkb/item-{n}/"


def article(n: int, **extra: Any) -> dict[str, Any]:
    title, body = f"Article {n}", f"Body of article {n}."
    return {
        "source": "csto-en",
        "url": URL.format(n=n),
        "title": title,
        "published": "2024-04-22",
        "body": body,
        "content_hash": content_hash(title, body),
        "article_id": None,
        **extra,
    }


@pytest.fixture
def session(tmp_path: Path):
    opened = CrawlSession(Config(path=None, database=tmp_path / "newsmon.db"), "crawl")
    for source in opened.config.sources:
        opened.begin(source)
    yield opened
    opened.close()


def pipeline(session: CrawlSession) -> StorePipeline:
    crawler = SimpleNamespace(spider=SimpleNamespace(session=session), settings=Settings())
    return StorePipeline(crawler)


def test_a_flush_stores_the_batch_and_counts_each_outcome(session):
    session.archive.store_article(article(1))
    store = pipeline(session)
    store.waiting = [article(1), article(2), article(3)]
    store.flush()
    assert session.runs["csto-en"].counts == {"unchanged": 1, "new": 2}
    assert session.archive.count_articles() == 3 and store.waiting == []


def test_an_article_that_cannot_be_stored_fails_alone_and_is_fetched_again(session):
    store = pipeline(session)
    unstorable = article(2, summary={"not": "a value SQLite can bind"})
    store.waiting = [article(1), unstorable, article(3)]
    store.flush()
    run = session.runs["csto-en"]
    assert run.counts == {"new": 2, "errors": 1}
    assert session.archive.get_article(URL.format(n=2)) is None
    assert list(run.failed_articles) == [URL.format(n=2)]
    session.finish()
    assert session.archive.failed_articles("csto-en") == [URL.format(n=2)]
