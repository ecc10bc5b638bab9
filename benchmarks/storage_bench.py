"""Storage throughput: newsmon's normalize-and-upsert path against raw sqlite3.executemany.

The input is what the spider hands the pipelines: ArticleItems read by the spider's own
`read_article` (untimed) from article pages the replica renders. The timed path is what the two
pipeline stages do in a crawl: `scraper.article.normalize_article` on each item, then
`Archive.store_articles` on batches of STORE_BATCH_SIZE. The baseline inserts the very rows that
path ended with (articles and revisions) into a fresh archive of the same schema (indexes and FTS
triggers included), with two `executemany` calls in one transaction. Both clocks run until the
connection is closed, when SQLite checkpoints what is left of the WAL: each side is timed until
its rows are in the database file, wherever its checkpoints ran. Diagnostic variants split the
path: normalizing alone, the batched upsert alone (rows normalized beforehand), and
`Archive.store_article` one article per transaction.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

from harness import REPO  # noqa: F401  (puts the repository on sys.path)
from scrapy.http import HtmlResponse

from monitor.config import CSTO_SELECTORS, SourceConfig
from monitor.replica import Replica, route, validate
from scraper import settings
from scraper.article import normalize_article, read_article
from scraper.extract import Entry
from scraper.items import ArticleItem
from storage.archive import Archive, utc_now

SITE = "https://en.odkb-csto.org"
BATCH = settings.STORE_BATCH_SIZE  # articles per transaction, as the crawl's StorePipeline


def build_items(count: int, seed: int = 1) -> list[ArticleItem]:
    """ArticleItems as the spider yields them for `count` replica article pages."""
    rep = Replica(articles=count, seed=seed)
    config = SourceConfig("csto-en", (SITE + "/news/",), "en", CSTO_SELECTORS)
    items = []
    for article_id in range(1, count + 1):
        article = rep.article(article_id)
        path = f"/news/news_odkb/{article.slug}/"
        answer = route(rep, "", path, SITE)
        validate(answer, None, None)
        response = HtmlResponse(url=SITE + path, body=answer.body, encoding="utf-8")
        entry = Entry(response.url, article.title, f"{article.published:%d.%m.%Y}", article.lead)
        validators = {
            "etag": answer.headers.get("ETag"),
            "last_modified": answer.headers.get("Last-Modified"),
        }
        item, _ = read_article(
            response, response.url, config.name, config, {"entry": entry}, validators, utc_now()
        )
        items.append(item)
    return items


class StorageBench:
    def __init__(self, count: int, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.items = build_items(count)
        self.normalized = [normalize_article(item) for item in self.items]
        self.final: dict[str, tuple[list[str], list[tuple[Any, ...]]]] = {}

    def warm_up(self) -> None:
        """One untimed pass of the path; it also yields the final rows for the raw baseline."""
        path = self._fresh("warm-up")
        with Archive(path) as archive:
            for start in range(0, len(self.items), BATCH):
                chunk = self.items[start : start + BATCH]
                archive.store_articles([normalize_article(item) for item in chunk])
        conn = sqlite3.connect(path)
        try:
            for table in ("articles", "revisions"):
                # table_info leaves out generated columns (articles.search_order): not inserted
                columns = [row[1] for row in conn.execute(f"pragma table_info({table})")]
                cursor = conn.execute(f"select {', '.join(columns)} from {table} order by id")
                self.final[table] = (columns, cursor.fetchall())
        finally:
            conn.close()

    def _fresh(self, name: str) -> Path:
        path = self.folder / f"{name}.db"
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        return path

    def run(self, what: str, round_: int) -> float:
        """Rows per second for one pass of `what` into a fresh archive."""
        path = self._fresh(f"{what}-{round_}")
        if what == "raw":
            Archive(path).close()  # the same schema, indexes and FTS triggers
            conn = sqlite3.connect(path)
            conn.execute("PRAGMA synchronous = NORMAL")
            started = time.perf_counter()
            with conn:
                for table, (columns, rows) in self.final.items():
                    marks = ", ".join("?" * len(columns))
                    sql = f"insert into {table} ({', '.join(columns)}) values ({marks})"
                    conn.executemany(sql, rows)
            conn.close()
            elapsed = time.perf_counter() - started
        elif what == "normalize":
            started = time.perf_counter()
            for item in self.items:
                normalize_article(item)
            elapsed = time.perf_counter() - started
        else:
            archive = Archive(path)
            started = time.perf_counter()
            if what == "path":  # as the pipelines: normalize each, store in batches
                for start in range(0, len(self.items), BATCH):
                    chunk = self.items[start : start + BATCH]
                    archive.store_articles([normalize_article(item) for item in chunk])
            elif what == "store":  # the batched upsert alone, on rows normalized beforehand
                for start in range(0, len(self.normalized), BATCH):
                    archive.store_articles(self.normalized[start : start + BATCH])
            else:  # "single": one article per transaction
                for article in self.normalized:
                    archive.store_article(article)
            archive.close()
            elapsed = time.perf_counter() - started
        self._fresh(f"{what}-{round_}")  # the file is not needed any more
        return len(self.items) / elapsed
