"""Exports of the archive: Atom and RSS feeds (feedgen), JSON, JSON Lines and CSV.

Every writer streams: rows come one at a time from the SQLite cursor and leave as bytes, so memory
stays flat however large the archive. feedgen builds a whole feed as one lxml tree, so the feeds
are assembled around it: feedgen renders the feed head with no entries, then each entry is
rendered on its own (`FeedEntry.atom_entry()` / `rss_entry()`), written, and dropped.

Writers take a binary stream (a file opened "wb", `sys.stdout.buffer`, `io.BytesIO`) and return
the number of articles written. Output is UTF-8.
"""

from __future__ import annotations

import csv
import html
import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import IO, Any
from urllib.parse import quote, urlsplit

from feedgen.entry import FeedEntry
from feedgen.feed import FeedGenerator
from lxml import etree

from storage.escapes import ESCAPES
from storage.search import (
    connection,
    execute_match,
    filter_sql,
    matching_keys_sql,
    prepare_query,
    rows_as_dicts,
)

FORMATS = ("atom", "rss", "json", "jsonl", "csv")
MEDIA_TYPES = {
    "atom": "application/atom+xml; charset=utf-8",
    "rss": "application/rss+xml; charset=utf-8",
    "json": "application/json; charset=utf-8",
    "jsonl": "application/x-ndjson; charset=utf-8",
    "csv": "text/csv; charset=utf-8",
}
COLUMNS = (
    "id",
    "source",
    "url",
    "title",
    "published",
    "updated",
    "summary",
    "body",
    "language",
    "section",
    "attachments",
    "first_seen",
    "last_seen",
    "removed_at",
)
CONTENT_NS = "http://purl.org/rss/1.0/modules/content/"
DESCRIPTION_CHARS = 400
FLUSH_EVERY = 256  # entries rendered between writes to the output stream

# When the article last changed: the newest revision once there is more than one, otherwise
# its publication date (or when newsmon first saw it).
UPDATED_SQL = (
    "coalesce((select max(r.seen_at) from revisions r where r.article_id = a.id"
    " having count(*) > 1), a.published, a.first_seen)"
)
NEWEST_FIRST = "coalesce(a.published, substr(a.first_seen, 1, 10)) desc, a.id desc"

# What XML 1.0 cannot carry at all (removed after terminal escapes, with their parameters).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class FeedInfo:
    """Feed-level fields. `id` must stay the same from one export to the next."""

    title: str = "newsmon archive"
    id: str = "urn:newsmon:feed:all"
    link: str | None = None  # the page the feed stands for (the news section)
    description: str = "Articles archived by newsmon"
    self_url: str | None = None  # where the feed itself is served, if anywhere
    language: str | None = None
    updated: datetime | None = None  # default: the newest entry's update time


def feed_id(sources: Iterable[str] = (), query: str | None = None) -> str:
    """A stable id for the feed of these sources (all when empty), optionally a search."""
    names = ",".join(sorted(set(sources))) or "all"
    value = f"urn:newsmon:feed:{quote(names, safe=',')}"
    if query:
        value += f":search:{quote(query, safe='')}"
    return value


# -- reading ---------------------------------------------------------------------------------


def _selection(
    sources: Iterable[str] | str | None,
    since: str | date | datetime | None,
    limit: int | None,
    query: str | None,
) -> tuple[str, list[Any]]:
    columns = ", ".join(
        f"{UPDATED_SQL} as updated" if column == "updated" else f"a.{column}" for column in COLUMNS
    )
    where, params = filter_sql(sources, since)
    if query is not None:
        where += f" and a.search_order in ({matching_keys_sql()})"
        params.append(prepare_query(query))
    sql = f"select {columns} from articles a where 1 = 1{where} order by {NEWEST_FIRST}"
    if limit is not None:
        if limit < 1:
            raise ValueError("limit must be a positive number")
        sql += f" limit {int(limit)}"
    return sql, params


def article_rows(
    db: Any,
    *,
    sources: Iterable[str] | str | None = None,
    since: str | date | datetime | None = None,
    limit: int | None = None,
    query: str | None = None,
) -> Iterator[dict[str, Any]]:
    """Articles newest first with every exported column, streamed from the cursor.

    `query` keeps only the articles matching a full-text search (`storage.search` syntax; a bad
    query raises `SearchSyntaxError` here, before any row).
    """
    conn = connection(db)
    sql, params = _selection(sources, since, limit, query)
    cursor = execute_match(conn, sql, params, query or "")
    return rows_as_dicts(cursor)


def newest_update(
    db: Any,
    *,
    sources: Iterable[str] | str | None = None,
    since: str | date | datetime | None = None,
    limit: int | None = None,
    query: str | None = None,
) -> datetime | None:
    """The latest `updated` among the articles an export would hold (the feed's own date)."""
    sql, params = _selection(sources, since, limit, query)
    row = execute_match(
        connection(db), f"select max(updated) from ({sql})", params, query or ""
    ).fetchone()
    return to_datetime(row[0]) if row else None


# -- helpers ---------------------------------------------------------------------------------


def to_datetime(value: str | None) -> datetime | None:
    """An archive date (``2024-04-22``, ``2024-04-22T10:00``, with or without offset) in UTC
    when it has no offset; None when missing or unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def xml_text(value: object) -> str:
    """Text safe to put in XML: no terminal escapes, no characters XML 1.0 forbids."""
    if value is None:
        return ""
    return _NOT_XML.sub("", ESCAPES.sub("", str(value)))


def body_html(body: str | None) -> str:
    """Plain article text (paragraphs split by blank lines) as escaped HTML paragraphs."""
    paragraphs = [p.strip() for p in re.split(r"\n\s*\n", xml_text(body)) if p.strip()]
    return "\n".join(
        "<p>" + html.escape(p, quote=False).replace("\n", "<br>\n") + "</p>" for p in paragraphs
    )


def _shorten(text: str, limit: int = DESCRIPTION_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut + "\u2026"


def _attachments(value: Any) -> list[str]:
    if not value:
        return []
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    try:
        parsed = json.loads(value)
    except (TypeError, ValueError):
        return [str(value)]
    return [str(v) for v in parsed] if isinstance(parsed, list) else [str(parsed)]


def _is_web_url(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


class _Batched:
    """Collect small byte strings and hand them to the stream in a few large writes."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.chunks: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.chunks.append(data)
        if len(self.chunks) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        if self.chunks:
            self.out.write(b"".join(self.chunks))
            self.chunks.clear()


def _check_binary(out: Any) -> None:
    if isinstance(out, io.TextIOBase):
        raise TypeError("export writers need a binary stream (open the file with 'wb')")


# -- feeds -----------------------------------------------------------------------------------


def _entry(row: dict[str, Any]) -> FeedEntry:
    url = xml_text(row["url"])
    published = to_datetime(row.get("published")) or to_datetime(row.get("first_seen"))
    updated = to_datetime(row.get("updated")) or published or datetime.now(UTC)
    entry = FeedEntry()
    entry.guid(url, permalink=_is_web_url(url))
    entry.title(xml_text(row.get("title")).strip() or url)
    entry.link(href=url, rel="alternate")
    entry.updated(updated)
    if published:
        entry.published(published)
    summary = xml_text(row.get("summary")).strip()
    body = xml_text(row.get("body"))
    description = summary or _shorten(body)
    if description:
        entry.summary(description)
    if body.strip():
        entry.content(body_html(body), type="html")
    if row.get("source"):
        entry.author(name=xml_text(row["source"]))
    if row.get("section"):
        entry.category(term=xml_text(row["section"]))
    return entry


def _atom_element(row: dict[str, Any]) -> etree._Element:
    element = _entry(row).atom_entry()
    # feedgen 1.0 drops the rel of entry links, so the alternate link is marked here and the
    # attachments are added here as rel="related" (two unmarked links would both be alternates).
    for link in element.findall("link"):
        link.set("rel", "alternate")
    for attachment in _attachments(row.get("attachments")):
        if _is_web_url(attachment):
            etree.SubElement(element, "link", href=xml_text(attachment), rel="related")
    return element


def _rss_element(row: dict[str, Any]) -> etree._Element:
    element = _entry(row).rss_entry()
    # content:encoded with its usual prefix instead of lxml's generated ns0.
    etree.cleanup_namespaces(element, top_nsmap={"content": CONTENT_NS})
    return element


def _head(feed: FeedInfo, first: dict[str, Any] | None) -> FeedGenerator:
    generator = FeedGenerator()
    generator.id(xml_text(feed.id))
    generator.title(xml_text(feed.title))
    generator.description(xml_text(feed.description) or xml_text(feed.title))
    link = feed.link or (first and _site_of(first["url"])) or "http://localhost/"
    generator.link(href=xml_text(link), rel="alternate")
    if feed.self_url:
        generator.link(href=xml_text(feed.self_url), rel="self")
    if feed.language:
        generator.language(xml_text(feed.language))
    updated = feed.updated or (first and to_datetime(first.get("updated"))) or datetime.now(UTC)
    generator.updated(updated)
    generator.lastBuildDate(updated)
    generator.generator("newsmon")
    return generator


def _site_of(url: str) -> str | None:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/" if parts.scheme and parts.netloc else None


def _write_feed(
    rows: Iterable[dict[str, Any]],
    out: IO[bytes],
    feed: FeedInfo,
    *,
    render_head: Callable[[FeedGenerator], bytes],
    closing_tag: bytes,
    render_entry: Callable[[dict[str, Any]], etree._Element],
) -> int:
    _check_binary(out)
    iterator = iter(rows)
    first = next(iterator, None)
    head = render_head(_head(feed, first))
    cut = head.rindex(closing_tag)
    sink = _Batched(out)
    sink.write(head[:cut])
    written = 0
    if first is not None:
        for row in _chain(first, iterator):
            element = render_entry(row)
            sink.write(etree.tostring(element, encoding="utf-8", pretty_print=True))
            written += 1
    sink.write(head[cut:])
    sink.flush()
    return written


def _chain(first: dict[str, Any], rest: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield first
    yield from rest


def write_atom(rows: Iterable[dict[str, Any]], out: IO[bytes], feed: FeedInfo | None = None) -> int:
    """An Atom 1.0 feed: entry id = the canonical URL, published/updated dates, summary and the
    full text as HTML content, the source as author, the section as category."""
    return _write_feed(
        rows,
        out,
        feed or FeedInfo(),
        render_head=lambda g: g.atom_str(pretty=True),
        closing_tag=b"</feed>",
        render_entry=_atom_element,
    )


def write_rss(rows: Iterable[dict[str, Any]], out: IO[bytes], feed: FeedInfo | None = None) -> int:
    """An RSS 2.0 feed: guid = the canonical URL, pubDate, description (the summary) and the full
    text in content:encoded."""
    return _write_feed(
        rows,
        out,
        feed or FeedInfo(),
        render_head=lambda g: g.rss_str(pretty=True),
        closing_tag=b"</channel>",
        render_entry=_rss_element,
    )


# -- data formats ----------------------------------------------------------------------------


def _record(row: dict[str, Any]) -> dict[str, Any]:
    record = {column: row.get(column) for column in COLUMNS}
    record["attachments"] = _attachments(row.get("attachments"))
    return record


def write_jsonl(
    rows: Iterable[dict[str, Any]], out: IO[bytes], feed: FeedInfo | None = None
) -> int:
    """One JSON object per line."""
    _check_binary(out)
    sink = _Batched(out)
    written = 0
    for row in rows:
        sink.write(json.dumps(_record(row), ensure_ascii=False).encode("utf-8") + b"\n")
        written += 1
    sink.flush()
    return written


def write_json(rows: Iterable[dict[str, Any]], out: IO[bytes], feed: FeedInfo | None = None) -> int:
    """One JSON array, written an element at a time."""
    _check_binary(out)
    sink = _Batched(out)
    written = 0
    for row in rows:
        sink.write(b"[\n" if written == 0 else b",\n")
        sink.write(json.dumps(_record(row), ensure_ascii=False).encode("utf-8"))
        written += 1
    sink.write(b"\n]\n" if written else b"[]\n")
    sink.flush()
    return written


def write_csv(rows: Iterable[dict[str, Any]], out: IO[bytes], feed: FeedInfo | None = None) -> int:
    """CSV with a header row (RFC 4180 quoting); attachments as a JSON list."""
    _check_binary(out)
    text = io.TextIOWrapper(out, encoding="utf-8", newline="")
    written = 0
    try:
        writer = csv.writer(text)
        writer.writerow(COLUMNS)
        for row in rows:
            record = {column: row.get(column) for column in COLUMNS}
            writer.writerow(["" if record[c] is None else record[c] for c in COLUMNS])
            written += 1
    finally:
        text.flush()
        text.detach()
    return written


def _cleaned(
    rows: Iterable[dict[str, Any]], clean: Callable[[str], str]
) -> Iterator[dict[str, Any]]:
    for row in rows:
        yield {key: clean(value) if isinstance(value, str) else value for key, value in row.items()}


WRITERS: dict[str, Callable[..., int]] = {
    "atom": write_atom,
    "rss": write_rss,
    "json": write_json,
    "jsonl": write_jsonl,
    "csv": write_csv,
}


def export(
    db: Any,
    fmt: str,
    out: IO[bytes],
    *,
    sources: Iterable[str] | str | None = None,
    since: str | date | datetime | None = None,
    limit: int | None = None,
    query: str | None = None,
    feed: FeedInfo | None = None,
    clean: Callable[[str], str] | None = None,
) -> int:
    """Write the selected articles, newest first, in `fmt`; return how many were written.

    `clean`, when given, is applied to every text value first (the CLI strips terminal escape
    sequences with it when the output is a terminal).
    """
    if fmt not in WRITERS:
        raise ValueError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}")
    selection = {"sources": sources, "since": since, "limit": limit, "query": query}
    rows = article_rows(db, **selection)
    if clean is not None:
        rows = _cleaned(rows, clean)
    if fmt in ("atom", "rss"):
        feed = feed or FeedInfo()
        if feed.updated is None:
            feed = replace(feed, updated=newest_update(db, **selection))
    return WRITERS[fmt](rows, out, feed)
