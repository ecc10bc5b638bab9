"""Full-text search over the archive: the FTS5 table `articles_fts` (title, body).

The query language is FTS5's, made forgiving where it would only get in the way:

- several words mean all of them (``afghanistan border``);
- ``"double quotes"`` make a phrase; ``afghan*`` is a prefix; ``title:word`` searches one column;
- ``AND``, ``OR``, ``NOT`` (upper case) and parentheses combine terms;
- a word with punctuation inside (``covid-19``, ``U.S.``, ``CSTO-2024``) is searched as the
  phrase of its parts, where bare FTS5 would fail with "no such column" or a syntax error.

What FTS5 still cannot parse (a lone quote, a stray ``AND``, ``*`` on its own) raises
`SearchSyntaxError` with a one-line explanation, never a raw `sqlite3.OperationalError`.

Results are ranked by bm25 (a match in the title weighs `TITLE_WEIGHT` times a match in the
body), then newest first on ties. A query that matches more than `RANK_WINDOW` articles ranks
the newest `RANK_WINDOW` of them (by publication date): bm25 costs about a microsecond per
match, and a word found in most of a large archive says little about which of them is best.
``window=None`` ranks every match.

The index's rowid is `articles.search_order` (publication day, then id; see storage/migrations),
so FTS5 lists matches in date order and the newest `RANK_WINDOW` are one rowid range.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import Any

import sqlite_utils

FTS_TABLE = "articles_fts"
FTS_COLUMNS = ("title", "body")
TITLE_WEIGHT = 3.0
RANK_WINDOW = 10_000  # matches ranked at most, newest first; ~20 ms of bm25 on 2 slow cores
SNIPPET_TOKENS = 24
ELLIPSIS = "\u2026"

# Markers around matched terms when a caller asks for them (`highlight=MARKS`): control
# characters, which cleaned article text never contains, so they split back unambiguously.
MARKS = ("\x02", "\x03")
_MARKED = re.compile("\x02(.*?)\x03", re.DOTALL)

_OPERATORS = frozenset({"AND", "OR", "NOT", "NEAR"})
_TOKENS = re.compile(
    r"""
      (?P<space>\s+)
    | (?P<phrase>"(?:[^"]|"")*")
    | (?P<quote>")
    | (?P<paren>[()])
    | (?P<word>[^\s"()]+)
    """,
    re.VERBOSE,
)
_BAREWORD = re.compile(r"\^?\w+\*?")
_COLUMN_FILTER = re.compile(r"(-?)(\w+):(.*)", re.DOTALL)
_HAS_WORD_CHAR = re.compile(r"\w")
_FTS5_DETAIL = re.compile(r"^(?:fts5: )?(.*)$")


class SearchSyntaxError(ValueError):
    """A query FTS5 cannot parse; the message is one line meant for the user."""


def prepare_query(query: str) -> str:
    """Rewrite a user's query into an FTS5 MATCH expression, or raise `SearchSyntaxError`."""
    if not query or not query.strip():
        raise SearchSyntaxError("empty search: give at least one word")
    parts: list[str] = []
    previous = "space"
    for match in _TOKENS.finditer(query):
        kind, text = match.lastgroup, match.group()
        if kind == "quote":
            raise SearchSyntaxError(
                f"unbalanced double quote in {query!r}: a phrase needs a closing quote"
            )
        if kind == "word":
            text = _prepare_word(text, query, after_phrase=previous == "phrase")
            if text is None:
                previous = "space"
                continue
        parts.append(text)
        previous = kind or "space"
    expression = "".join(parts).strip()
    if not expression:
        raise SearchSyntaxError(f"nothing to search for in {query!r}: give at least one word")
    return expression


def _prepare_word(word: str, query: str, *, after_phrase: bool) -> str | None:
    if word in _OPERATORS or _BAREWORD.fullmatch(word):
        return word
    if word == "*":
        if after_phrase:  # "some phrase"* is a prefix search on the phrase's last word
            return word
        raise SearchSyntaxError(
            f"cannot search for {query!r}: * must directly follow a word, as in afghan*"
        )
    if word == "+":  # FTS5 phrase concatenation: "one" + "two"
        return word
    column = _COLUMN_FILTER.fullmatch(word)
    if column and column.group(2) in FTS_COLUMNS:
        rest = column.group(3)
        if not rest:  # title:"a phrase" - the phrase follows as its own token
            return word
        inner = _prepare_word(rest, query, after_phrase=False)
        return f"{column.group(1)}{column.group(2)}:{inner}" if inner else None
    if not _HAS_WORD_CHAR.search(word):
        return None  # punctuation only: nothing the tokenizer would index
    prefix = word.endswith("*")
    core = word.rstrip("*") if prefix else word
    return '"' + core.replace('"', '""') + '"' + ("*" if prefix else "")


def _syntax_error(query: str, exc: sqlite3.OperationalError) -> SearchSyntaxError | None:
    """Translate FTS5's parse errors; None for anything else (locked database, ...)."""
    message = str(exc)
    if not (
        message.startswith("fts5:")
        or message.startswith("unknown special query")
        or message.startswith("no such column")
        or "unterminated string" in message
        or "malformed MATCH" in message
    ):
        return None
    detail = _FTS5_DETAIL.match(message).group(1).rstrip(": ")
    detail = detail.replace('near ""', "at the end")
    return SearchSyntaxError(
        f"cannot parse the search {query!r} ({detail}): AND, OR and NOT need a term on each "
        'side, "double quotes" make a phrase, * ends a prefix'
    )


def connection(db: Any) -> sqlite3.Connection:
    """The sqlite3 connection behind a sqlite_utils Database, an Archive, or a connection."""
    if isinstance(db, sqlite3.Connection):
        return db
    if isinstance(db, sqlite_utils.Database):
        return db.conn
    inner = getattr(db, "db", None)
    if isinstance(inner, sqlite_utils.Database):
        return inner.conn
    raise TypeError(f"expected a sqlite_utils.Database or an Archive, not {type(db).__name__}")


def _iso(value: str | date | datetime | None) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    return value.isoformat()


def _names(sources: Iterable[str] | str | None) -> list[str]:
    if sources is None:
        return []
    if isinstance(sources, str):
        return [sources]
    return list(dict.fromkeys(sources))


def filter_sql(
    sources: Iterable[str] | str | None, since: str | date | datetime | None, alias: str = "a"
) -> tuple[str, list[Any]]:
    """`and ...` conditions on articles (source in ..., published or first seen on/after since)."""
    where, params = "", []
    names = _names(sources)
    if names:
        where += f" and {alias}.source in ({', '.join('?' * len(names))})"
        params.extend(names)
    since_text = _iso(since)
    if since_text:
        where += f" and coalesce({alias}.published, {alias}.first_seen) >= ?"
        params.append(since_text)
    return where, params


def execute_match(
    conn: sqlite3.Connection, sql: str, params: list[Any], query: str
) -> sqlite3.Cursor:
    """Run SQL holding a MATCH on the user's `query`; FTS5 parse errors become SearchSyntaxError."""
    try:
        return conn.execute(sql, params)
    except sqlite3.OperationalError as exc:
        error = _syntax_error(query, exc)
        if error is None:
            raise
        raise error from None


def search(
    db: Any,
    query: str,
    *,
    sources: Iterable[str] | str | None = None,
    since: str | date | datetime | None = None,
    limit: int | None = None,
    highlight: tuple[str, str] | None = None,
    window: int | None = RANK_WINDOW,
) -> Iterator[dict[str, Any]]:
    """Articles matching `query`, best first (bm25), newest first on ties; rows are streamed.

    Only the newest `window` matches (by publication day, after the filters) are ranked;
    ``window=None`` ranks every match.

    Each row has id, url, title, published, source, section, language, removed_at, rank (lower is
    better) and snippet: a short excerpt of the body around the matches. With
    ``highlight=(start, end)`` the matched terms in title and snippet are wrapped in those
    strings (`MARKS` and `split_marked` give an unambiguous pair for terminals); without it both
    are plain text. A query FTS5 cannot parse raises `SearchSyntaxError` here, before any row.
    """
    if limit is not None and limit < 1:
        raise ValueError("limit must be a positive number")
    if window is not None and window < 1:
        raise ValueError("window must be a positive number")
    conn = connection(db)
    expression = prepare_query(query)
    start, end = highlight or ("", "")
    where, params = filter_sql(sources, since)
    if window is not None:
        oldest = _window_start(conn, expression, where, params, window, query)
        if oldest is not None:
            where += f" and {FTS_TABLE}.rowid >= ?"  # read by FTS5 as a rowid range
            params.append(oldest)
    title = f"highlight({FTS_TABLE}, 0, ?, ?)" if highlight else "a.title"
    title_params = [start, end] if highlight else []
    sql = f"""
        select a.id, a.url, {title} as title, a.published, a.source, a.section, a.language,
               a.removed_at,
               snippet({FTS_TABLE}, 1, ?, ?, ?, {SNIPPET_TOKENS}) as snippet,
               bm25({FTS_TABLE}, {TITLE_WEIGHT}, 1.0) as rank
        from {FTS_TABLE} join articles a on a.search_order = {FTS_TABLE}.rowid
        where {FTS_TABLE} match ?{where}
        order by rank, coalesce(a.published, substr(a.first_seen, 1, 10)) desc, a.id desc
    """
    if limit is not None:
        sql += f" limit {int(limit)}"
    all_params = [*title_params, start, end, ELLIPSIS, expression, *params]
    cursor = execute_match(conn, sql, all_params, query)
    return rows_as_dicts(cursor)


def _window_start(
    conn: sqlite3.Connection,
    expression: str,
    where: str,
    params: list[Any],
    window: int,
    query: str,
) -> int | None:
    """The search key of the `window`-th newest match, or None when fewer match.

    FTS5 walks its matches in rowid order without scoring them; a filter on articles needs the
    join, an unfiltered query does not.
    """
    join = f" join articles a on a.search_order = {FTS_TABLE}.rowid" if where else ""
    sql = (
        f"select {FTS_TABLE}.rowid from {FTS_TABLE}{join} where {FTS_TABLE} match ?{where}"
        f" order by {FTS_TABLE}.rowid desc limit 1 offset ?"
    )
    row = execute_match(conn, sql, [expression, *params, window - 1], query).fetchone()
    return row[0] if row else None


def rows_as_dicts(cursor: sqlite3.Cursor) -> Iterator[dict[str, Any]]:
    """Stream a cursor as dicts, closing it when done (or abandoned)."""
    columns = [column[0] for column in cursor.description]
    try:
        for row in cursor:
            yield dict(zip(columns, row, strict=True))
    finally:
        with contextlib.suppress(sqlite3.ProgrammingError):  # the connection may be closed
            cursor.close()


def count(
    db: Any,
    query: str,
    *,
    sources: Iterable[str] | str | None = None,
    since: str | date | datetime | None = None,
) -> int:
    """How many articles match `query` (same rules and filters as `search`)."""
    conn = connection(db)
    expression = prepare_query(query)
    where, params = filter_sql(sources, since)
    sql = f"""
        select count(*) from {FTS_TABLE} join articles a on a.search_order = {FTS_TABLE}.rowid
        where {FTS_TABLE} match ?{where}
    """
    return execute_match(conn, sql, [expression, *params], query).fetchone()[0]


def matching_keys_sql() -> str:
    """A subquery selecting the `search_order` keys of the articles matching one `?` parameter
    (a prepared query): ``a.search_order in (...)``."""
    return f"select rowid from {FTS_TABLE} where {FTS_TABLE} match ?"


def split_marked(text: str | None) -> list[tuple[str, bool]]:
    """Split text highlighted with `MARKS` into (text, is_match) parts, markers removed."""
    parts: list[tuple[str, bool]] = []
    position = 0
    value = text or ""
    for match in _MARKED.finditer(value):
        if match.start() > position:
            parts.append((value[position : match.start()], False))
        parts.append((match.group(1), True))
        position = match.end()
    if position < len(value):
        parts.append((value[position:], False))
    return [(part.replace(MARKS[0], "").replace(MARKS[1], ""), hit) for part, hit in parts]
