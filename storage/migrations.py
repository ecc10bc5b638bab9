"""Versioned schema migrations, tracked in `PRAGMA user_version`.

Each step is a function that moves the schema from version N-1 to N. A database made by an older
newsmon is brought forward on open; one made by a newer newsmon is refused rather than damaged.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

import sqlite_utils

FTS_TOKENIZER = "unicode61 remove_diacritics 2"


def _create_core_tables(db: sqlite_utils.Database) -> None:
    db["articles"].create(
        {
            "id": int,
            "source": str,
            "url": str,
            "title": str,
            "published": str,
            "summary": str,
            "body": str,
            "language": str,
            "section": str,
            "attachments": str,
            "content_hash": str,
            "first_seen": str,
            "last_seen": str,
            "last_checked": str,
            "removed_at": str,
            "etag": str,
            "last_modified": str,
        },
        pk="id",
        not_null={"source", "url"},
    )
    db["articles"].create_index(["url"], unique=True)
    db["articles"].create_index(["source", "published"])
    db["revisions"].create(
        {
            "id": int,
            "article_id": int,
            "content_hash": str,
            "title": str,
            "body": str,
            "seen_at": str,
        },
        pk="id",
        foreign_keys=[("article_id", "articles", "id")],
    )
    db["revisions"].create_index(["article_id", "content_hash"], unique=True)
    db["articles"].enable_fts(["title", "body"], create_triggers=True, tokenize=FTS_TOKENIZER)


def _create_run_tables(db: sqlite_utils.Database) -> None:
    columns = {"id": int, "source": str, "kind": str, "started_at": str, "finished_at": str}
    columns.update({"status": str, "message": str})
    columns.update(dict.fromkeys(("pages", "requests", "new", "updated", "removed"), int))
    columns.update(dict.fromkeys(("unchanged", "errors"), int))
    db["crawl_runs"].create(columns, pk="id")
    db["crawl_runs"].create_index(["source", "id"])
    db["http_validators"].create(
        {"url": str, "etag": str, "last_modified": str, "checked_at": str}, pk="url"
    )


def create_alerts_table(db: sqlite_utils.Database) -> None:
    db["alerts"].create(
        {
            "id": int,
            "alert_id": str,
            "event": str,
            "source": str,
            "article_id": int,
            "channel": str,
            "status": str,
            "attempts": int,
            "next_attempt_at": str,
            "last_error": str,
            "created_at": str,
            "sent_at": str,
            "payload": str,
        },
        pk="id",
        defaults={"attempts": 0, "status": "pending"},
        if_not_exists=True,
    )
    db["alerts"].create_index(["alert_id"], unique=True, if_not_exists=True)
    db["alerts"].create_index(["status", "next_attempt_at"], if_not_exists=True)


def _create_robots_cache(db: sqlite_utils.Database) -> None:
    db["robots_cache"].create({"netloc": str, "body": bytes, "fetched_at": str}, pk="netloc")


def _add_run_completeness(db: sqlite_utils.Database) -> None:
    """Whether a run walked the whole listing; until one has, crawls keep backfilling."""
    db["crawl_runs"].add_column("complete", int, not_null_default=0)
    db.execute("update crawl_runs set complete = 1 where status = 'ok'")


def _index_browsing_columns(db: sqlite_utils.Database) -> None:
    """Datasette's facets and the newest-first sort read these on every page."""
    for column in ("published", "section", "language"):
        db["articles"].create_index([column], if_not_exists=True)


def _create_failed_articles(db: sqlite_utils.Database) -> None:
    """New articles whose page failed: fetched directly by later runs until they work."""
    columns = {"url": str, "source": str, "attempts": int, "last_error": str}
    columns.update(first_failed=str, last_failed=str)
    db["failed_articles"].create(columns, pk="url")


def _create_url_aliases(db: sqlite_utils.Database) -> None:
    """Listing links whose page names another canonical URL, so they count as known."""
    db["url_aliases"].create({"alias": str, "url": str}, pk="alias")


# The full-text index's rowid for an article: its publication day (else the day newsmon first saw
# it) in the high bits, its id in the low 32, so the index lists matches in date order and a
# search can read the newest matches of a broad query first. Unique while ids stay below 2**32.
# (julianday of the date() alone: a day number that changes at midnight UTC, not at noon.)
SEARCH_ORDER_SQL = (
    "(coalesce(cast(julianday(date(coalesce(published, first_seen))) as integer), 0) << 32) + id"
)
GENERATED_COLUMNS_SQLITE = (3, 31, 0)


def _order_search_by_date(db: sqlite_utils.Database) -> None:
    """Re-key the full-text index by `search_order` (publication day, then id) instead of id.

    Article ids follow the order articles were stored, which a backfill makes newest-first and
    later checks oldest-first; ranking the newest matches of a broad query needs date order.
    """
    if sqlite3.sqlite_version_info < GENERATED_COLUMNS_SQLITE:
        raise sqlite3.NotSupportedError(
            f"newsmon needs SQLite {'.'.join(map(str, GENERATED_COLUMNS_SQLITE))} or newer"
            f" (generated columns); this Python uses SQLite {sqlite3.sqlite_version}"
        )
    db.execute(
        f"alter table articles add column search_order integer"
        f" generated always as ({SEARCH_ORDER_SQL}) virtual"
    )
    db.execute("create unique index idx_articles_search_order on articles (search_order)")
    for trigger in ("articles_ai", "articles_ad", "articles_au"):
        db.execute(f"drop trigger if exists [{trigger}]")
    # By hand, not with sqlite-utils' enable_fts: it keys the index on rowid (content_rowid is
    # not an option) and its update trigger re-indexes on every update, last_checked included.
    db.execute("drop table if exists articles_fts")
    db.execute(
        "create virtual table articles_fts using fts5(title, body, content='articles',"
        f" content_rowid='search_order', tokenize='{FTS_TOKENIZER}')"
    )
    old = "insert into articles_fts (articles_fts, rowid, title, body)"
    old += " values ('delete', old.search_order, old.title, old.body);"
    new = "insert into articles_fts (rowid, title, body)"
    new += " values (new.search_order, new.title, new.body);"
    db.execute(f"create trigger articles_ai after insert on articles begin {new} end")
    db.execute(f"create trigger articles_ad after delete on articles begin {old} end")
    # Only a change of what is indexed or of what the key is made of re-indexes: revisits update
    # last_checked on every check.
    columns = "title, body, published, first_seen, id"
    db.execute(
        f"create trigger articles_au after update of {columns} on articles begin {old} {new} end"
    )
    db.execute("insert into articles_fts (articles_fts) values ('rebuild')")


def _cover_search_ties(db: sqlite_utils.Database) -> None:
    """Let a search rank and break ties from the index alone.

    A search joins each of up to RANK_WINDOW matches to its article to order ties by date, and
    reading `published` from the article row cost as much as ranking itself (the row holds the
    body). The key index now also carries the two date columns. It enforces the uniqueness of the
    triple only; search_order itself is unique by construction (day << 32 + id, ids below 2**32).
    """
    db.execute("drop index if exists idx_articles_search_order")
    db.execute(
        "create unique index idx_articles_search_order"
        " on articles (search_order, published, first_seen)"
    )


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _create_core_tables,
    _create_run_tables,
    create_alerts_table,
    _create_robots_cache,
    _add_run_completeness,
    _index_browsing_columns,
    _create_failed_articles,
    _create_url_aliases,
    _order_search_by_date,
    _cover_search_ties,
]


class SchemaTooNewError(Exception):
    pass


def schema_version(db: sqlite_utils.Database) -> int:
    return next(db.query("PRAGMA user_version"))["user_version"]


def migrate(db: sqlite_utils.Database) -> int:
    """Apply every pending step, each in its own transaction; return the resulting version.

    Each step takes the write lock first (BEGIN IMMEDIATE) and reads the version again under it:
    two processes opening an old file at once (a crawl and `newsmon search`) would otherwise both
    run the same step, and the second would fail on what the first created.
    """
    version = _check_version(db)
    while version < len(MIGRATIONS):
        db.conn.execute("BEGIN IMMEDIATE")
        try:
            version = _check_version(db)
            if version < len(MIGRATIONS):
                MIGRATIONS[version](db)
                version += 1
                db.execute(f"PRAGMA user_version = {version}")
        except BaseException:
            db.conn.rollback()
            raise
        db.conn.commit()
    return len(MIGRATIONS)


def _check_version(db: sqlite_utils.Database) -> int:
    version = schema_version(db)
    if version > len(MIGRATIONS):
        raise SchemaTooNewError(
            f"database schema version {version} is newer than this newsmon ({len(MIGRATIONS)})"
        )
    return version
