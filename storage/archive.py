"""The SQLite archive: articles, revisions, crawl runs, HTTP validators and the alert outbox.

Schema, upserts and full-text search go through sqlite-utils. Every article write runs in one
`Database.atomic()` block together with the alerts it causes, so a crash never leaves half an
article, and never an article change without its alert.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import weakref
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlite_utils

from storage.checkpoint import WalCheckpointer
from storage.migrations import SchemaTooNewError, migrate
from storage.normalize import canonical_url, is_http_url

# What store_article writes to the articles table; an item may carry more (alias, article_id).
ARTICLE_FIELDS = (
    "source",
    "url",
    "title",
    "published",
    "summary",
    "body",
    "language",
    "section",
    "attachments",
    "content_hash",
    "etag",
    "last_modified",
)

_REVISION_SQL = (
    "insert or ignore into revisions (article_id, content_hash, title, body, seen_at)"
    " values (?, ?, ?, ?, ?)"
)
_ALIAS_SQL = "insert or ignore into url_aliases (alias, url) values (?, ?)"

ChangeHook = Callable[[str, dict[str, Any]], None]


class ArchiveError(Exception):
    """A problem with the database file that the user can fix (locked, not a database, ...)."""


def utc_now() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def _open_private(path: Path) -> None:
    """Create the file readable by the user only, before SQLite creates it with the umask."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o600)
        os.close(fd)


class Archive:
    """One SQLite file in WAL mode; safe for one writer and many readers at once."""

    def __init__(
        self, path: str | Path, *, busy_timeout_ms: int = 10_000, temp_in_memory: bool = False
    ) -> None:
        """`temp_in_memory` keeps SQLite's temporary files in memory: for a crawl's writer. Each
        article inserted inside a batch's transaction fires triggers, so SQLite journals the
        pages the statement touches, and past 64 KiB in one transaction that journal goes to a
        temporary file (measured: 76 MB written to /var/tmp in 37,000 writes for a backfill of
        2,000 articles; storing took 10% longer). Left off elsewhere, and for migrations, where a
        large sort may need a temporary file."""
        self.path = Path(path)
        try:
            _open_private(self.path)
        except OSError as exc:
            raise ArchiveError(f"cannot create database {self.path}: {exc.strerror}") from None
        conn = sqlite3.connect(self.path, timeout=busy_timeout_ms / 1000)
        self.db = sqlite_utils.Database(conn)
        try:
            self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
            self.db.enable_wal()
            self.db.execute("PRAGMA synchronous = NORMAL")
            migrate(self.db)  # with SQLite's default: building an index on a large table sorts
            if temp_in_memory:
                self.db.execute("PRAGMA temp_store = MEMORY")
        except sqlite3.DatabaseError as exc:
            self.db.close()
            raise ArchiveError(f"cannot open database {self.path}: {exc}") from exc
        except SchemaTooNewError:
            self.db.close()
            raise
        self._checkpointer = WalCheckpointer(self.path.absolute(), conn)
        weakref.finalize(self, self._checkpointer.close)

    def close(self) -> None:
        self._checkpointer.close()
        self.db.close()

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- articles ---------------------------------------------------------------------------

    def store_article(
        self,
        article: dict[str, Any],
        *,
        now: str | None = None,
        on_change: ChangeHook | None = None,
    ) -> str:
        """Insert or update one article; return "new", "updated" or "unchanged".

        `on_change(outcome, article_row)` runs inside the same transaction (the outbox enqueues
        its alerts there), so the change and its alerts commit together or not at all.
        """
        return self.store_articles([article], now=now, on_change=on_change)[0]

    def store_articles(
        self,
        articles: Iterable[dict[str, Any]],
        *,
        now: str | None = None,
        on_change: ChangeHook | None = None,
    ) -> list[str]:
        """Store many articles in one transaction; return each one's outcome, in order.

        A crawl hands its articles over in batches: articles not stored yet (all of them in a
        backfill) are inserted with one `executemany` per table, at close to raw SQLite speed,
        and the rest are rewritten one by one. The changes and the alerts `on_change`
        enqueues commit together, or none of them do. Times are `now`, else each article's
        `fetched_at`, else the current time.
        """
        current = utc_now()
        batch = [
            (article, self._record(article), now or article.get("fetched_at") or current)
            for article in articles
        ]
        outcomes: list[str] = [""] * len(batch)
        with self._writing():
            stored = self._ids_by_url([record["url"] for _, record, _ in batch])
            fresh, rest, seen = [], [], set()
            for index, (_, record, _) in enumerate(batch):
                url = record["url"]
                (rest if url in stored or url in seen else fresh).append(index)
                seen.add(url)
            self._insert_many([batch[i] for i in fresh], on_change)
            for index in fresh:
                outcomes[index] = "new"
            for index in rest:  # in order: a URL twice in one batch is new, then an update
                outcomes[index] = self._rewrite(*batch[index], on_change)
        return outcomes

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A write transaction that takes the write lock first (BEGIN IMMEDIATE).

        A deferred transaction that reads before it writes gets SQLITE_BUSY at once, busy
        timeout or not, when another process commits in between (WAL); waiting for the lock
        up front lets the busy timeout work. Inside an open transaction: a savepoint. After the
        commit the WAL is checkpointed on another thread (storage/checkpoint.py).
        """
        if self.db.conn.in_transaction:
            with self.db.atomic():
                yield
            return
        self.db.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.conn.rollback()
            raise
        self.db.conn.commit()
        self._checkpointer.request()

    @staticmethod
    def _record(article: dict[str, Any]) -> dict[str, Any]:
        record = {key: article.get(key) for key in ARTICLE_FIELDS}
        attachments = record["attachments"]
        if isinstance(attachments, list | tuple):
            record["attachments"] = (
                json.dumps(list(attachments), ensure_ascii=False) if attachments else "[]"
            )
        return record

    def _rewrite(
        self,
        article: dict[str, Any],
        record: dict[str, Any],
        now: str,
        on_change: ChangeHook | None,
    ) -> str:
        """Write an article stored already: "updated" when its content changed, else "unchanged"."""
        existing = self._row_by_url(record["url"])
        # Looked up under the write lock, or inserted earlier in this batch.
        assert existing is not None, record["url"]
        if existing["content_hash"] != record["content_hash"]:
            outcome, article_id = "updated", self._update(existing, record, now)
        else:
            outcome, article_id = "unchanged", self._refresh(existing, record, now)
        if article.get("alias"):  # the listing links here by another URL
            self.db.conn.execute(_ALIAS_SQL, [article["alias"], record["url"]])
        if outcome == "updated":
            self._add_revision(article_id, record, now)
            if on_change is not None:
                on_change(outcome, {**record, "id": article_id})
        return outcome

    # The write path of every crawl: plain parameterized SQL on the connection. sqlite-utils'
    # Table.insert/update and Database.query re-read the schema (sqlite_master) and open a
    # savepoint on every call, which cost more than the writes themselves.

    def _row_by_url(self, url: str) -> dict[str, Any] | None:
        cursor = self.db.conn.execute("select * from articles where url = ?", [url])
        row = cursor.fetchone()
        return dict(zip([c[0] for c in cursor.description], row, strict=True)) if row else None

    def _ids_by_url(self, urls: list[str]) -> dict[str, int]:
        """The ids of the stored articles among these URLs; one query per 400 URLs."""
        ids: dict[str, int] = {}
        for start in range(0, len(urls), 400):
            chunk = urls[start : start + 400]
            sql = f"select url, id from articles where url in ({','.join('?' * len(chunk))})"
            ids.update(self.db.conn.execute(sql, chunk))
        return ids

    def _insert_many(
        self,
        batch: list[tuple[dict[str, Any], dict[str, Any], str]],
        on_change: ChangeHook | None,
    ) -> None:
        """Insert articles not stored yet, with their first revisions, aliases and alerts.

        The ids are the ones SQLite would choose (max(id) + 1 onwards: the table has no
        AUTOINCREMENT), named up front under the write lock so they need no lookup afterwards.
        """
        if not batch:
            return
        next_id = "select coalesce(max(id), 0) + 1 from articles"
        (first_id,) = self.db.conn.execute(next_id).fetchone()
        ids = range(first_id, first_id + len(batch))
        columns = ["id", *ARTICLE_FIELDS, "first_seen", "last_seen", "last_checked"]
        sql = (
            f"insert into articles ({', '.join(f'[{c}]' for c in columns)})"
            f" values ({', '.join('?' * len(columns))})"
        )
        rows = (
            [article_id, *map(record.get, ARTICLE_FIELDS), when, when, when]
            for article_id, (_, record, when) in zip(ids, batch, strict=True)
        )
        self.db.conn.executemany(sql, rows)
        self.db.conn.executemany(
            _REVISION_SQL,
            (
                (article_id, record["content_hash"], record["title"], record["body"], when)
                for article_id, (_, record, when) in zip(ids, batch, strict=True)
            ),
        )
        self.db.conn.executemany(
            _ALIAS_SQL, ((a["alias"], r["url"]) for a, r, _ in batch if a.get("alias"))
        )
        if on_change is not None:
            for article_id, (_, record, _) in zip(ids, batch, strict=True):
                on_change("new", {**record, "id": article_id})

    def _set(self, article_id: int, changes: dict[str, Any]) -> None:
        assignments = ", ".join(f"[{key}] = ?" for key in changes)
        sql = f"update articles set {assignments} where id = ?"
        self.db.conn.execute(sql, [*changes.values(), article_id])

    def _update(self, existing: dict[str, Any], record: dict[str, Any], now: str) -> int:
        changes = {k: v for k, v in record.items() if v is not None or k in ("title", "body")}
        changes.update(last_seen=now, last_checked=now, removed_at=None)
        self._set(existing["id"], changes)
        return existing["id"]

    def _refresh(self, existing: dict[str, Any], record: dict[str, Any], now: str) -> int:
        """Same content: note that we saw it, and fill fields an earlier fetch lacked."""
        changes: dict[str, Any] = {"last_seen": now, "last_checked": now, "removed_at": None}
        for key in ("published", "summary", "section", "language"):
            if existing.get(key) is None and record.get(key) is not None:
                changes[key] = record[key]
        if record.get("etag") or record.get("last_modified"):
            changes.update(etag=record.get("etag"), last_modified=record.get("last_modified"))
        self._set(existing["id"], changes)
        return existing["id"]

    def _add_revision(self, article_id: int, record: dict[str, Any], now: str) -> None:
        values = [article_id, record["content_hash"], record["title"], record["body"], now]
        self.db.conn.execute(_REVISION_SQL, values)

    def known_urls(self, urls: Iterable[str]) -> set[str]:
        """Which of these canonical URLs are stored, as an article's URL or as an alias of one
        (a listing link whose page names another canonical URL); one query per 400 URLs."""
        urls = list(dict.fromkeys(urls))
        found: set[str] = set()
        for start in range(0, len(urls), 400):
            chunk = urls[start : start + 400]
            marks = ",".join("?" * len(chunk))
            sql = (
                f"select url from articles where url in ({marks})"
                f" union select alias from url_aliases where alias in ({marks})"
            )
            found.update(row["url"] for row in self.db.query(sql, chunk + chunk))
        return found

    def mark_checked(
        self, article_id: int, *, etag: str | None = None, last_modified: str | None = None
    ) -> None:
        changes = {"last_checked": utc_now(), "etag": etag, "last_modified": last_modified}
        self.db["articles"].update(article_id, changes)

    def mark_removed(
        self, article_id: int, *, now: str | None = None, on_change: ChangeHook | None = None
    ) -> bool:
        """Set removed_at once; return False when it was already marked."""
        now = now or utc_now()
        with self.db.atomic():
            row = self.get_article(article_id)
            if row is None or row["removed_at"] is not None:
                return False
            self.db["articles"].update(article_id, {"removed_at": now, "last_checked": now})
            if on_change is not None:
                on_change("removed", {**row, "removed_at": now})
        return True

    def due_for_revisit(
        self, source: str, *, revisit_days: float, revisit_every: float, now: datetime | None = None
    ) -> list[dict[str, Any]]:
        """Recent articles not checked for `revisit_every` seconds: candidates for an edit check."""
        now = now or datetime.now(UTC)
        recent = (now - timedelta(days=revisit_days)).date().isoformat()
        stale = (now - timedelta(seconds=revisit_every)).replace(microsecond=0).isoformat()
        sql = """
            select id, url, content_hash, etag, last_modified from articles
            where source = ? and removed_at is null
              and coalesce(published, substr(first_seen, 1, 10)) >= ?
              and (last_checked is null or last_checked <= ?)
            order by id
        """
        return list(self.db.query(sql, [source, recent, stale]))

    # -- reading ----------------------------------------------------------------------------

    def get_article(self, id_or_url: int | str) -> dict[str, Any] | None:
        """The stored article, as `show` gives it: without `search_order`, the key the full-text
        index orders matches by (storage/migrations.py), which is no property of the article."""
        if isinstance(id_or_url, int) or str(id_or_url).isdigit():
            rows = self.db.query("select * from articles where id = ?", [int(id_or_url)])
        else:
            rows = self.db.query("select * from articles where url = ?", [id_or_url])
        found = next(iter(rows), None)
        if found is None and isinstance(id_or_url, str) and is_http_url(id_or_url):
            canonical = canonical_url(id_or_url)  # as the site links it: ?sphrase_id=, #comments
            if canonical != id_or_url:
                return self.get_article(canonical)
        if found is not None:
            found.pop("search_order", None)
        return found

    def revisions(self, article_id: int) -> list[dict[str, Any]]:
        sql = "select * from revisions where article_id = ? order by id"
        return list(self.db.query(sql, [article_id]))

    def iter_articles(
        self,
        *,
        sources: Iterable[str] | None = None,
        since: str | None = None,
        limit: int | None = None,
        columns: str = "*",
    ) -> Iterator[dict[str, Any]]:
        """Articles newest first (by published date, then by id); streamed, not loaded."""
        where, params = ["1 = 1"], []
        if sources:
            names = list(sources)
            where.append(f"source in ({','.join('?' * len(names))})")
            params.extend(names)
        if since:
            where.append("coalesce(published, first_seen) >= ?")
            params.append(since)
        sql = (
            f"select {columns} from articles where {' and '.join(where)}"
            " order by coalesce(published, substr(first_seen, 1, 10)) desc, id desc"
        )
        if limit is not None:
            sql += f" limit {int(limit)}"
        return self.db.query(sql, params)

    def count_articles(self, source: str | None = None) -> int:
        if source is None:
            return self.db["articles"].count
        return next(self.db.query("select count(*) n from articles where source = ?", [source]))[
            "n"
        ]

    # -- crawl runs -------------------------------------------------------------------------

    def start_run(self, source: str, kind: str) -> int:
        row = {"source": source, "kind": kind, "started_at": utc_now(), "status": "running"}
        return self.db["crawl_runs"].insert(row).last_pk

    def finish_run(
        self,
        run_id: int,
        status: str,
        counts: dict[str, int],
        message: str = "",
        *,
        complete: bool = False,
    ) -> None:
        keys = ("pages", "requests", "new", "updated", "removed", "unchanged", "errors")
        changes: dict[str, Any] = {k: int(counts.get(k, 0)) for k in keys}
        changes.update(finished_at=utc_now(), status=status, message=message or None)
        changes["complete"] = int(complete)
        self.db["crawl_runs"].update(run_id, changes)

    def has_baseline(self, source: str) -> bool:
        """True once any crawl or check of this source has succeeded."""
        sql = "select 1 from crawl_runs where source = ? and status = 'ok' limit 1"
        return next(iter(self.db.query(sql, [source])), None) is not None

    def needs_backfill(self, source: str) -> bool:
        """True unless the latest run that got past the first page finished its walk.

        A run killed mid-walk stays "running", and a page-limited one is not complete: both
        may have stored the newest pages and left older ones unvisited. A run that failed
        outright changed nothing, so it does not count either way.
        """
        sql = (
            "select complete from crawl_runs where source = ? and status != 'failed'"
            " order by id desc limit 1"
        )
        row = next(iter(self.db.query(sql, [source])), None)
        return row is None or not row["complete"]

    def consecutive_failures(self, source: str) -> int:
        sql = (
            "select status from crawl_runs where source = ? and status != 'running'"
            " order by id desc"
        )
        count = 0
        for row in self.db.query(sql, [source]):
            if row["status"] == "ok":
                break
            count += 1
        return count

    def last_run(self, source: str) -> dict[str, Any] | None:
        sql = "select * from crawl_runs where source = ? order by id desc limit 1"
        return next(iter(self.db.query(sql, [source])), None)

    # -- conditional requests ---------------------------------------------------------------

    def validators(self, url: str) -> tuple[str | None, str | None]:
        rows = self.db.query("select etag, last_modified from http_validators where url = ?", [url])
        row = next(iter(rows), None)
        return (row["etag"], row["last_modified"]) if row else (None, None)

    def save_validators(self, url: str, etag: str | None, last_modified: str | None) -> None:
        row = {"url": url, "etag": etag, "last_modified": last_modified, "checked_at": utc_now()}
        self.db["http_validators"].upsert(row, pk="url")

    def cached_robots(self, netloc: str, max_age: float) -> bytes | None:
        """A robots.txt body fetched less than `max_age` seconds ago, or None."""
        oldest = (datetime.now(UTC) - timedelta(seconds=max_age)).replace(microsecond=0)
        sql = "select body from robots_cache where netloc = ? and fetched_at >= ?"
        row = next(iter(self.db.query(sql, [netloc, oldest.isoformat()])), None)
        return row["body"] if row else None

    def save_robots(self, netloc: str, body: bytes) -> None:
        row = {"netloc": netloc, "body": body, "fetched_at": utc_now()}
        self.db["robots_cache"].upsert(row, pk="netloc")

    def failed_articles(self, source: str, max_attempts: int = 20) -> list[str]:
        """New articles that earlier runs could not fetch, still worth another try."""
        sql = "select url from failed_articles where source = ? and attempts < ? order by url"
        return [row["url"] for row in self.db.query(sql, [source, max_attempts])]

    def record_failed_articles(self, source: str, failures: dict[str, str]) -> None:
        """Count one more failed attempt per URL; forget those stored since."""
        now = utc_now()
        with self.db.atomic():
            self.db.execute(
                "delete from failed_articles where source = ? and (url in"
                " (select url from articles) or url in (select alias from url_aliases))",
                [source],
            )
            for url, reason in failures.items():
                self.db.execute(
                    "insert into failed_articles (url, source, attempts, last_error, first_failed,"
                    " last_failed) values (?, ?, 1, ?, ?, ?) on conflict(url) do update set"
                    " attempts = attempts + 1, last_error = excluded.last_error,"
                    " last_failed = excluded.last_failed",
                    [url, source, reason[:500], now, now],
                )
