"""`newsmon browse`: Datasette over the archive, read-only, with newsmon's metadata and plugin.

The database is always served under the name ``newsmon`` (``/newsmon/articles``), whatever the
file is called, so the metadata, the canned queries and the documented URLs hold for every
archive. Datasette opens mutable files with ``?mode=ro``: browsing takes no write lock, and in WAL
mode readers never block the writer, so a crawl or `watch` keeps writing while browse runs (and
Datasette sees the new rows on the next request).

This module is also the Datasette plugin (registered by `make_datasette`; it acts only on
instances whose metadata has a ``plugins.newsmon`` block, as the shipped metadata does). It adds:

- ``title`` cells rendered as links to the original page (escaped; http/https URLs only);
- a ``month`` facet type (``{"month": "published"}``), which filters with ``published__startswith``;
- the live feed: ``/-/feed.atom`` and ``/-/feed.rss`` (``?source=NAME``, ``?q=QUERY``,
  ``?since=DATE``, ``?limit=N``), newest first, with an ETag for polite polling.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
import webbrowser
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from datasette import hookimpl
from datasette.app import Datasette
from datasette.database import Database, QueryInterrupted
from datasette.facets import Facet
from datasette.plugins import pm
from datasette.utils import escape_sqlite, path_with_added_args, path_with_removed_args
from datasette.utils.asgi import Response
from markupsafe import Markup

from storage.export import MEDIA_TYPES, FeedInfo, export, feed_id
from storage.search import SearchSyntaxError

DATABASE_NAME = "newsmon"
DEFAULT_PORT = 8001
FEED_PATHS = {"atom": "/-/feed.atom", "rss": "/-/feed.rss"}
FEED_LIMIT = 50
FEED_MAX_LIMIT = 500
SETTINGS = {"facet_time_limit_ms": 1000, "sql_time_limit_ms": 3000, "suggest_facets": False}
LOOPBACK = ("127.0.0.1", "localhost", "::1")

PLUGIN_NAME = "newsmon"


class BrowseError(Exception):
    """The archive cannot be served (unreadable file, port taken, ...); one line for the user."""


def load_metadata() -> dict[str, Any]:
    """The Datasette metadata shipped in the package (monitor/datasette/metadata.json)."""
    text = resources.files("monitor").joinpath("datasette/metadata.json").read_text("utf-8")
    return json.loads(text)


# -- the plugin ------------------------------------------------------------------------------


def _is_web_url(value: object) -> bool:
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


class MonthFacet(Facet):
    """Facet a date column by month (``2024-04``); a click filters with ``col__startswith``."""

    type = "month"

    async def suggest(self) -> list[dict[str, Any]]:
        return []

    async def facet_results(self) -> tuple[list[dict[str, Any]], list[str]]:
        results: list[dict[str, Any]] = []
        timed_out: list[str] = []
        args = dict(self.get_querystring_pairs())
        size = self.get_facet_size()
        for item in self.get_configs():
            config = item["config"]
            column = config.get("column") or config["simple"]
            col = escape_sqlite(column)
            sql = (
                f"select substr({col}, 1, 7) as value, count(*) as count from ({self.sql})"
                f" where {col} glob '[0-9][0-9][0-9][0-9]-[0-9][0-9]*'"
                f" group by value order by value desc limit {size + 1}"
            )
            try:
                rows = await self.ds.execute(
                    self.database,
                    sql,
                    self.params,
                    truncate=False,
                    custom_time_limit=self.ds.setting("facet_time_limit_ms"),
                )
            except QueryInterrupted:
                timed_out.append(column)
                continue
            key = f"{column}__startswith"
            values = []
            for row in rows.rows[:size]:
                selected = args.get(key) == row["value"]
                change = path_with_removed_args if selected else path_with_added_args
                values.append(
                    {
                        "value": row["value"],
                        "label": row["value"],
                        "count": row["count"],
                        "toggle_url": self.ds.absolute_url(
                            self.request, change(self.request, {key: row["value"]})
                        ),
                        "selected": selected,
                    }
                )
            results.append(
                {
                    "name": column,
                    "type": self.type,
                    "results": values,
                    "hideable": item["source"] != "metadata",
                    "toggle_url": path_with_removed_args(self.request, {"_facet_month": column}),
                    "truncated": len(rows.rows) > size,
                }
            )
        return results, timed_out


async def feed_view(datasette: Datasette, request: Any) -> Response:
    """The live feed: the archive's newest articles as Atom or RSS, rendered on each request."""
    fmt = request.url_vars["format"]
    args = request.args
    options = datasette.plugin_config(PLUGIN_NAME) or {}
    default_limit = int(options.get("feed_limit", FEED_LIMIT))
    max_limit = int(options.get("feed_max_limit", FEED_MAX_LIMIT))
    sources = [name for name in args.getlist("source") if name]
    query = (args.get("q") or "").strip() or None
    try:
        limit = int(args.get("limit") or default_limit)
    except ValueError:
        return Response.text("limit must be a number", status=400)
    if not 1 <= limit <= max_limit:
        return Response.text(f"limit must be between 1 and {max_limit}", status=400)
    since = None
    if args.get("since"):
        from storage.normalize import parse_date

        since = parse_date(args.get("since"))
        if since is None:
            return Response.text("since: cannot read that as a date (try 2024-04-22)", status=400)
    title = "newsmon: " + (", ".join(sources) if sources else "all sources")
    if query:
        title += f" matching {query}"
    feed = FeedInfo(
        title=title,
        id=feed_id(sources, query),
        link=datasette.absolute_url(request, f"/{DATABASE_NAME}/articles"),
        description="Newest articles in the newsmon archive",
        self_url=datasette.absolute_url(request, request.full_path),
    )

    def render(conn: sqlite3.Connection) -> bytes:
        out = io.BytesIO()
        selection = {"sources": sources, "since": since, "limit": limit, "query": query}
        export(conn, fmt, out, feed=feed, **selection)
        return out.getvalue()

    try:
        body = await datasette.get_database(DATABASE_NAME).execute_fn(render)
    except SearchSyntaxError as exc:
        return Response.text(str(exc), status=400)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag in (request.headers.get("if-none-match") or ""):
        return Response("", status=304, headers=headers)
    return Response(body, headers=headers, content_type=MEDIA_TYPES[fmt])


# Datasette hooks: this module is the plugin. Each hook acts only on instances whose metadata
# has a "plugins": {"newsmon": {...}} block (the shipped metadata does), so other Datasette
# instances in the same process are left alone.


def _ours(datasette: Any) -> bool:
    return isinstance(datasette.plugin_config(PLUGIN_NAME), dict)


@hookimpl
def render_cell(
    row: Any, value: Any, column: str, table: str | None, database: str, datasette: Any
) -> Markup | None:
    """An article title (table or canned query with a url column) as a link to its page."""
    if column != "title" or database != DATABASE_NAME or not _ours(datasette):
        return None
    if value is None or table not in ("articles", None):
        return None
    try:
        url = row["url"]
    except (IndexError, KeyError, TypeError):
        return None
    if not _is_web_url(url):
        return None
    return Markup('<a href="{}" rel="noopener noreferrer">{}</a>').format(url, value)


@hookimpl
def register_facet_classes() -> list[type[Facet]]:
    return [MonthFacet]


@hookimpl
def register_routes(datasette: Any) -> list[tuple[str, Callable[..., Any]]]:
    if not _ours(datasette):
        return []
    return [(r"^/-/feed\.(?P<format>atom|rss)$", feed_view)]


def _register_plugin() -> None:
    if pm.get_plugin(PLUGIN_NAME) is None:
        pm.register(sys.modules[__name__], name=PLUGIN_NAME)


# -- the server ------------------------------------------------------------------------------


def check_readable(path: Path) -> None:
    """Fail early, in one line, when the file is not a newsmon archive Datasette can read."""
    uri = Path(path).resolve().as_uri() + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True)
        try:
            conn.execute("select count(*) from articles_fts where rowid = 0").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise BrowseError(f"cannot read the archive {path}: {exc}") from None


def make_datasette(path: str | Path, *, metadata: dict[str, Any] | None = None) -> Datasette:
    """A Datasette instance serving `path` read-only as ``newsmon`` with the shipped metadata."""
    _register_plugin()
    path = Path(path)
    datasette = Datasette(
        files=[str(path)],
        metadata=metadata if metadata is not None else load_metadata(),
        settings=SETTINGS,
    )
    for name in [n for n, db in datasette.databases.items() if db.path == str(path)]:
        datasette.remove_database(name)
    datasette.add_database(Database(datasette, path=str(path), is_mutable=True), DATABASE_NAME)
    return datasette


def _listen(host: str, port: int) -> socket.socket:
    """Bind and listen before announcing the URL, so it answers as soon as it is printed."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        raise BrowseError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock = socket.socket(family, kind, proto)
    try:
        if os.name != "nt":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise BrowseError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def base_url(host: str, port: int) -> str:
    shown = "127.0.0.1" if host in ("", "0.0.0.0") else host  # noqa: S104 - display only
    if shown == "::":
        shown = "::1"
    if ":" in shown:
        shown = f"[{shown}]"
    return f"http://{shown}:{port}/"


class _Stop(Exception):
    """SIGTERM, turned into a normal return once uvicorn has shut down gracefully."""


def _raise_stop(signum: int, frame: Any) -> None:
    raise _Stop


def _open_when_ready(server: Any, url: str) -> None:
    deadline = time.monotonic() + 30
    while not server.started and not server.should_exit and time.monotonic() < deadline:
        time.sleep(0.05)
    if server.started:
        webbrowser.open(url)


def serve(
    path: str | Path,
    *,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    open_browser: bool = True,
    echo: Callable[[str], None] = print,
) -> None:
    """Serve the archive until Ctrl-C (SIGINT) or SIGTERM. Port 0 picks a free port."""
    import uvicorn

    path = Path(path)
    check_readable(path)
    sock = _listen(host, port)
    datasette = make_datasette(path)
    url = base_url(host, sock.getsockname()[1])
    config = uvicorn.Config(
        datasette.app(), log_config=None, log_level="warning", access_log=False, lifespan="on"
    )
    server = uvicorn.Server(config)
    echo(f"Serving {path} read-only at {url}")
    echo(f"Articles: {url}{DATABASE_NAME}/articles  Live feed: {url}-/feed.atom (RSS: -/feed.rss)")
    echo("Press Ctrl-C to stop.")
    if open_browser:
        threading.Thread(target=_open_when_ready, args=(server, url), daemon=True).start()
    previous = signal.signal(signal.SIGTERM, _raise_stop)
    try:
        server.run(sockets=[sock])
    except (KeyboardInterrupt, _Stop):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()
        for database in datasette.databases.values():
            database.close()
