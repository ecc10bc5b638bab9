"""Search latency over an archive of generated articles (no crawl: rows are inserted directly).

Rows come from the replica's article generator (CSTO-style titles and bodies, a small vocabulary,
so common words match a large share of the archive: the hard case for ranking). They go into an
Archive database with sqlite-utils `insert_all`, so the FTS5 triggers fill `articles_fts`.
Queries go through `storage.search.search` as `newsmon search` runs them (the newest
`RANK_WINDOW` matches ranked), and again with `window=None` (every match ranked, `--rank-all`).
The baseline is the same FTS5 MATCH, unranked.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from harness import REPO  # noqa: F401  (puts the repository on sys.path)

from monitor.replica import Replica
from storage.archive import Archive, utc_now
from storage.normalize import content_hash
from storage.search import matching_keys_sql, search

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

    def build(self) -> float:
        started = time.perf_counter()
        self.archive = Archive(self.path)
        self.archive.db["articles"].insert_all(generate(self.count), batch_size=500)
        return time.perf_counter() - started

    def _ways(self) -> dict[str, Callable[[str], list[Any]]]:
        archive = self.archive
        assert archive is not None
        sql = (
            "select id, title, url from articles where search_order in"
            f" ({matching_keys_sql()} limit 20)"
        )
        return {
            "ranked": lambda q: list(search(archive, q, limit=20)),
            "exhaustive": lambda q: list(search(archive, q, limit=20, window=None)),
            "unranked": lambda q: archive.db.execute(sql, [q]).fetchall(),
        }

    def measure(self, rounds: int) -> dict[str, Any]:
        """Milliseconds per query, every kind and way interleaved; one untimed round warms up."""
        ways = self._ways()
        times: dict[str, list[float]] = {way: [] for way in ways}
        kinds: dict[str, list[float]] = {kind: [] for kind in QUERIES}
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
                    for way, fn in ways.items():
                        started = time.perf_counter()
                        rows = fn(query)
                        elapsed = (time.perf_counter() - started) * 1000
                        if round_ == 0:
                            assert len(rows) == min(20, matches[query]), (way, query, len(rows))
                            continue
                        times[way].append(elapsed)
                        if way == "ranked":
                            kinds[kind].append(elapsed)
        return times | {"kinds": kinds, "matches": matches}
