"""Search latency over an archive of generated articles (no crawl: rows are inserted directly).

Rows come from the replica's article generator (CSTO-style titles and bodies, a small vocabulary,
so common words match a large share of the archive: the hard case for ranking). They go into an
Archive database with sqlite-utils `insert_all`, so the FTS5 triggers fill `articles_fts`.
Queries go through `storage.search.search` when that module exists, else through sqlite-utils'
`Table.search` (FTS5 MATCH ... ORDER BY rank LIMIT 20). The baseline is the same MATCH unranked.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness import REPO  # noqa: F401  (puts the repository on sys.path)

from monitor.replica import Replica
from storage.archive import Archive, utc_now
from storage.normalize import content_hash

QUERIES = {
    "one word": ["terrorism", "Minsk", "peacekeeping", "exercises"],
    "two words": ["information security", "drug trafficking", "border Asia", "Armenia Tajikistan"],
    "phrase": ['"crisis response"', '"Joint staff exercises"', '"Collective Security Treaty"'],
}


def generate(count: int, seed: int = 7) -> Iterator[dict[str, Any]]:
    rep, now = Replica(articles=count, seed=seed), utc_now()
    for article_id in range(count, 0, -1):
        a = rep.article(article_id)
        body = "\n\n".join(a.paragraphs)
        yield {
            "source": "csto-en",
            "url": f"https://en.odkb-csto.org/news/news_odkb/{a.slug}/",
            "title": a.title,
            "published": a.published.isoformat(),
            "summary": a.lead,
            "body": body,
            "language": "en",
            "section": "news_odkb",
            "attachments": "[]",
            "content_hash": content_hash(a.title, body),
            "first_seen": now,
            "last_seen": now,
            "last_checked": now,
        }


class SearchBench:
    def __init__(self, count: int, path: Path) -> None:
        self.count, self.path = count, path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.archive: Archive | None = None
        self.via = "sqlite-utils Table.search"

    def build(self) -> float:
        started = time.perf_counter()
        self.archive = Archive(self.path)
        self.archive.db["articles"].insert_all(generate(self.count), batch_size=500)
        return time.perf_counter() - started

    def _ranked(self) -> Callable[[str], list[Any]]:
        assert self.archive is not None
        archive, table = self.archive, self.archive.db["articles"]
        if importlib.util.find_spec("storage.search") is not None:
            found = _storage_search(archive)
            if found is not None:
                self.via = "storage.search"
                return found
        return lambda q: list(table.search(q, columns=["id", "title", "url"], limit=20))

    def _unranked(self) -> Callable[[str], list[Any]]:
        assert self.archive is not None
        db = self.archive.db
        sql = (
            "select id, title, url from articles where rowid in"
            " (select rowid from articles_fts where articles_fts match ? limit 20)"
        )
        return lambda q: db.execute(sql, [q]).fetchall()

    def measure(self, rounds: int) -> dict[str, Any]:
        """Milliseconds per query, every kind interleaved; one untimed round warms the cache."""
        ranked, unranked = self._ranked(), self._unranked()
        kinds: dict[str, list[float]] = {kind: [] for kind in QUERIES}
        all_ranked: list[float] = []
        all_unranked: list[float] = []
        assert self.archive is not None
        db = self.archive.db
        matches = {
            query: db.execute(
                "select count(*) from articles_fts where articles_fts match ?", [query]
            ).fetchone()[0]
            for queries in QUERIES.values()
            for query in queries
        }
        for round_ in range(rounds + 1):
            for kind, queries in QUERIES.items():
                for query in queries:
                    for fn, sink in ((ranked, all_ranked), (unranked, all_unranked)):
                        started = time.perf_counter()
                        rows = fn(query)
                        elapsed = (time.perf_counter() - started) * 1000
                        if round_ == 0:
                            assert len(rows) == min(20, matches[query]), (query, len(rows))
                            continue
                        sink.append(elapsed)
                        if fn is ranked:
                            kinds[kind].append(elapsed)
        return {
            "ranked": all_ranked,
            "unranked": all_unranked,
            "kinds": kinds,
            "matches": matches,
        }


def _storage_search(archive: Archive) -> Callable[[str], list[Any]] | None:
    """Adapt to storage.search.search, written elsewhere; None if its shape is not recognised."""
    module = importlib.import_module("storage.search")
    search = getattr(module, "search", None)
    if search is None:
        return None
    params = list(inspect.signature(search).parameters)
    target: Any = archive.db if params and params[0] in ("db", "database") else archive
    kwargs = {"limit": 20} if "limit" in params else {}
    return lambda q: list(search(target, q, **kwargs))
