"""`newsmon search`, `newsmon export` and `newsmon browse`: thin commands over storage.search,
storage.export and monitor.browse.

Registered on the main group in monitor/cli.py. This module does not import monitor.cli at load
time (monitor.cli imports it), so the shared error classes are looked up when a command runs.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from monitor.terminal import safe_text
from storage.search import MARKS, RANK_WINDOW, SearchSyntaxError, split_marked

JSON_FIELDS = ("id", "url", "title", "published", "source", "snippet")


def _usage_problem(message: str) -> click.ClickException:
    from monitor.cli import UsageProblem

    return UsageProblem(message)


def _run_problem(message: str) -> click.ClickException:
    from monitor.cli import RunProblem

    return RunProblem(message)


def _parse_since(value: str | None) -> str | None:
    from monitor.cli import parse_since

    return parse_since(value)


def _database_path(app: Any) -> Path:
    """The configured archive, which must exist: these commands read, they never create one."""
    path = Path(app.config.database)
    if not path.exists():
        raise _usage_problem(
            f"no archive at {safe_text(path)}: run `newsmon crawl` first, or pass --db PATH"
        )
    return path


def _check_sources(app: Any, archive: Any, sources: tuple[str, ...]) -> None:
    """A --source must be configured or present in the archive (an old source keeps its rows)."""
    if not sources:
        return
    configured = [source.name for source in app.config.sources]
    stored = [row["source"] for row in archive.db.query("select distinct source from articles")]
    known = list(dict.fromkeys([*configured, *stored]))
    for name in sources:
        if name not in known:
            raise _usage_problem(
                f"unknown source {name!r}; known sources: {', '.join(known) or 'none yet'}"
            )


def _color(stream: IO[str] | None = None) -> bool:
    stream = stream or sys.stdout
    return bool(getattr(stream, "isatty", lambda: False)()) and not os.environ.get("NO_COLOR")


def _render_marked(text: str | None, color: bool, **style: Any) -> str:
    """Text carrying MARKS: matches bold yellow on a terminal, markers dropped otherwise."""
    pieces = []
    for part, is_match in split_marked(text):
        clean = safe_text(part)
        if color and is_match:
            pieces.append(click.style(clean, fg="yellow", bold=True))
        elif color and style:
            pieces.append(click.style(clean, **style))
        else:
            pieces.append(clean)
    return "".join(pieces)


def _plain(row: dict[str, Any]) -> dict[str, Any]:
    """A JSON object for one hit; text goes through safe_text like everything printed."""
    return {
        key: safe_text(row[key]) if isinstance(row[key], str) else row[key] for key in JSON_FIELDS
    }


@click.command()
@click.argument("query", nargs=-1, required=True)
@click.option(
    "--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable)."
)
@click.option("--since", help="Only articles published on or after this date.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="JSON Lines: id, url, title, published, source, snippet.",
)
@click.option(
    "--rank-all",
    is_flag=True,
    help=f"Rank every match; by default a query matching more than {RANK_WINDOW:,} articles"
    f" ranks the newest {RANK_WINDOW:,} (faster, and a word in most articles says little about"
    " relevance).",
)
@click.pass_obj
def search(
    app: Any,
    query: tuple[str, ...],
    sources: tuple[str, ...],
    since: str | None,
    limit: int,
    as_json: bool,
    rank_all: bool,
) -> None:
    """Full-text search of titles and bodies, best match first.

    Several words find articles containing all of them; "double quotes" find a phrase (quote
    them for the shell too: newsmon search '"collective security"'); afghan* is a prefix; OR,
    NOT and parentheses combine terms; title:word searches titles only.
    """
    from storage import search as library

    text = " ".join(query)
    since_iso = _parse_since(since)
    with _open_archive(app) as archive:
        _check_sources(app, archive, sources)
        try:
            total = library.count(archive, text, sources=sources, since=since_iso)
            rows = library.search(
                archive,
                text,
                sources=sources,
                since=since_iso,
                limit=limit,
                highlight=None if as_json else MARKS,
                window=None if rank_all else library.RANK_WINDOW,
            )
        except SearchSyntaxError as exc:
            raise _usage_problem(str(exc)) from None
        if as_json:
            for row in rows:
                click.echo(json.dumps(_plain(row), ensure_ascii=False))
        else:
            _print_total(text, _print_hits(rows, _color()), total)
    if total > library.RANK_WINDOW and not rank_all:
        click.echo(
            f"Ranked the newest {library.RANK_WINDOW:,} of them; --rank-all ranks every match,"
            " more words or --since narrow the search.",
            err=True,
        )


def _print_total(text: str, shown: int, total: int) -> None:
    if total == 0:
        click.echo(f"No articles match {safe_text(text)!r}.", err=True)
    elif shown < total:
        click.echo(f"{shown} of {total} matching articles; --limit N shows more.", err=True)
    else:
        click.echo(f"{total} matching article{'s' if total != 1 else ''}.", err=True)


def _print_hits(rows: Iterator[dict[str, Any]], color: bool) -> int:
    shown = 0
    for row in rows:
        if shown:
            click.echo("")
        date = (row["published"] or "----------")[:10]
        gone = " [removed]" if row.get("removed_at") else ""
        head = f"{row['id']:>6}  {date}  {safe_text(row['source'])}  "
        title = _render_marked(row["title"], color, bold=True) or safe_text(row["url"])
        click.echo(head + title + gone)
        snippet = _render_marked(row["snippet"], color)
        if snippet:
            click.echo(" " * 8 + snippet)
        url = safe_text(row["url"])
        click.echo(" " * 8 + (click.style(url, fg="blue") if color else url))
        shown += 1
    return shown


@contextlib.contextmanager
def _open_archive(app: Any) -> Iterator[Any]:
    _database_path(app)
    archive = app.archive()
    try:
        yield archive
    finally:
        archive.close()


def _feed_info(app: Any, sources: tuple[str, ...], query: str | None) -> Any:
    from storage.export import FeedInfo, feed_id

    configured = {source.name: source for source in app.config.sources}
    chosen = [configured[name] for name in sources if name in configured]
    if not sources:
        chosen = list(configured.values())
    link = chosen[0].start_urls[0] if len(chosen) == 1 and chosen[0].start_urls else None
    languages = {source.language for source in chosen if source.language}
    title = "newsmon: " + (", ".join(sources) if sources else "all sources")
    if query:
        title += f" matching {query}"
    return FeedInfo(
        title=title,
        id=feed_id(sources, query),
        link=link,
        description="Articles archived by newsmon"
        + (f" from {', '.join(s.start_urls[0] for s in chosen if s.start_urls)}" if chosen else ""),
        language=languages.pop() if len(languages) == 1 else None,
    )


@click.command()
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["atom", "rss", "json", "jsonl", "csv"]),
    default="atom",
    show_default=True,
)
@click.option(
    "--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable)."
)
@click.option("--since", help="Only articles published on or after this date.")
@click.option("--limit", type=click.IntRange(min=1), help="At most N articles (newest).")
@click.option("--search", "query", metavar="QUERY", help="Only articles matching this search.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to FILE (replaced atomically) instead of standard output.",
)
@click.pass_obj
def export(
    app: Any,
    fmt: str,
    sources: tuple[str, ...],
    since: str | None,
    limit: int | None,
    query: str | None,
    output: Path | None,
) -> None:
    """Export articles newest first: an Atom or RSS feed, JSON, JSON Lines or CSV.

    Streams: memory stays flat however large the archive.
    """
    from storage import export as library
    from storage.search import prepare_query

    since_iso = _parse_since(since)
    if query is not None:
        try:
            prepare_query(query)
        except SearchSyntaxError as exc:
            raise _usage_problem(str(exc)) from None
    with _open_archive(app) as archive:
        _check_sources(app, archive, sources)
        feed = _feed_info(app, sources, query)
        selection = {"sources": sources, "since": since_iso, "limit": limit, "query": query}
        try:
            if output is None:
                stream = click.get_binary_stream("stdout")
                clean = _terminal_clean if _color() else None
                with _stdout_pipe(stream):
                    library.export(archive, fmt, stream, feed=feed, clean=clean, **selection)
                return
            with _atomic(output) as stream:
                written = library.export(archive, fmt, stream, feed=feed, **selection)
        except SearchSyntaxError as exc:
            raise _usage_problem(str(exc)) from None
        except OSError as exc:
            raise _run_problem(f"cannot write {output}: {exc.strerror or exc}") from None
    click.echo(f"{written} articles written to {safe_text(output)} ({fmt})", err=True)


def _terminal_clean(text: str) -> str:
    return safe_text(text, keep_newlines=True)


@contextlib.contextmanager
def _stdout_pipe(stream: IO[bytes]) -> Iterator[None]:
    """A reader that stops early (`newsmon export | head`) ends the export quietly."""
    try:
        yield
        stream.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        sys.exit(0)


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[IO[bytes]]:
    """A temporary file next to `path`, renamed over it only when writing succeeded.

    A feed reader or web server reading the file never sees half a feed.
    """
    path = path.expanduser()
    directory = path.parent if str(path.parent) else Path(".")
    fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as stream:
            yield stream
        try:
            mode = path.stat().st_mode & 0o777
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(temp, mode)
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise


@click.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8001, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--open/--no-open", "open_browser", default=True, help="Open a web browser on the archive."
)
@click.pass_obj
def browse(app: Any, port: int, host: str, open_browser: bool) -> None:
    """Browse and search the archive in Datasette (read-only) until Ctrl-C.

    Also serves a live feed at /-/feed.atom and /-/feed.rss (?source=NAME, ?q=QUERY, ?limit=N).
    Port 0 picks a free port.
    """
    from monitor.browse import LOOPBACK, BrowseError, serve

    path = _database_path(app)
    app.archive().close()  # brings an older archive's schema up to date before serving it
    if host not in LOOPBACK:
        click.echo(
            f"warning: --host {safe_text(host)} lets anyone who can reach this machine read the"
            " archive",
            err=True,
        )
    try:
        serve(path, host=host, port=port, open_browser=open_browser, echo=_echo_safe)
    except BrowseError as exc:
        raise _run_problem(str(exc)) from None


def _echo_safe(line: str) -> None:
    click.echo(safe_text(line))
