"""The `newsmon` command line: a thin layer over the library, one command per verb.

Exit codes: 0 success, 1 a source failed (or yielded nothing), 2 bad usage or configuration.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from monitor import logs
from monitor.config import Config, ConfigError, check_setting, load_config
from monitor.terminal import safe_text
from storage.archive import Archive, ArchiveError
from storage.migrations import SchemaTooNewError
from storage.normalize import parse_date


class UsageProblem(click.ClickException):
    """A mistake in the command line or the config: one line, exit 2."""

    exit_code = 2


class RunProblem(click.ClickException):
    """Something outside the user's input went wrong (site down, database locked): exit 1."""

    exit_code = 1


@dataclass
class AppContext:
    config_path: Path | None
    db_path: Path | None
    _config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.config_path, database=self.db_path)
            except ConfigError as exc:
                raise UsageProblem(str(exc)) from None
        return self._config

    def archive(self, *, create: bool = True) -> Archive:
        """Open the archive; commands that only read it refuse to create a mistyped one."""
        path = self.config.database
        if not create and not Path(path).exists():
            raise UsageProblem(
                f"no archive at {safe_text(path)}: run `newsmon crawl` first, or pass --db PATH"
            )
        try:
            return Archive(path)
        except (ArchiveError, SchemaTooNewError) as exc:
            raise RunProblem(str(exc)) from None


pass_app = click.make_pass_decorator(AppContext)


def parse_overrides(values: tuple[str, ...]) -> dict[str, str]:
    overrides = {}
    for value in values:
        name, sep, setting = value.partition("=")
        if not sep or not name.strip():
            raise UsageProblem(f"-s expects NAME=VALUE, not {value!r}")
        try:
            check_setting(name.strip(), setting)
        except ValueError as exc:
            raise UsageProblem(f"-s {exc}") from None
        overrides[name.strip()] = setting
    return overrides


def parse_since(value: str | None) -> str | None:
    if value is None:
        return None
    parsed = parse_date(value)
    if parsed is None:
        raise UsageProblem(f"--since: cannot read {value!r} as a date (try 2024-04-22)")
    return parsed


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=None, default=str))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="newsmon")
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Config file (default: ./newsmon.toml, or the built-in CSTO sources).",
)
@click.option(
    "--db", "db_path", type=click.Path(dir_okay=False, path_type=Path), help="SQLite archive."
)
@click.option("-v", "--verbose", count=True, help="More log output (-vv for Scrapy's debug log).")
@click.option("-q", "--quiet", count=True, help="Less log output.")
@click.pass_context
def cli(
    ctx: click.Context, config_path: Path | None, db_path: Path | None, verbose: int, quiet: int
) -> None:
    """newsmon: archive news sections into SQLite and alert on new announcements."""
    logs.configure(verbose, quiet)
    ctx.obj = AppContext(config_path, db_path)


def source_option(func: Any) -> Any:
    return click.option(
        "--source", "sources", multiple=True, metavar="NAME", help="Only this source (repeatable)."
    )(func)


def settings_option(func: Any) -> Any:
    return click.option(
        "-s", "--set", "overrides", multiple=True, metavar="NAME=VALUE", help="Scrapy setting."
    )(func)


def run_spider(app: AppContext, sources: tuple[str, ...], **kwargs: Any) -> Any:
    from monitor.runner import AlreadyRunning, CrawlInterrupted, run_once

    config = app.config
    try:
        config.select_sources(sources)
    except ConfigError as exc:
        raise UsageProblem(str(exc)) from None
    app.archive().close()  # surfaces an unusable database before Scrapy starts
    try:
        return run_once(config, sources, **kwargs)
    except AlreadyRunning as exc:
        raise RunProblem(str(exc)) from None
    except CrawlInterrupted as exc:
        raise RunProblem(str(exc)) from None


def print_report(report: Any, as_json: bool) -> None:
    if as_json:
        emit_json(report.as_dict())
        return
    for source in report.sources:
        click.echo(
            f"{source['source']}: {source['status']} - {source['pages']} pages, "
            f"{source['new']} new, {source['updated']} updated, {source['removed']} removed, "
            f"{source['unchanged']} unchanged, {source['errors']} errors"
        )


@cli.command()
@source_option
@click.option("--full", is_flag=True, help="Walk every listing page and re-fetch every article.")
@click.option("--max-pages", type=click.IntRange(min=1), help="Listing pages per source.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the counts.")
@settings_option
@pass_app
def crawl(
    app: AppContext,
    sources: tuple[str, ...],
    full: bool,
    max_pages: int | None,
    as_json: bool,
    overrides: tuple[str, ...],
) -> None:
    """Crawl sources into the archive (new articles; everything with --full)."""
    report = run_spider(
        app,
        sources,
        mode="full" if full else "crawl",
        max_pages=max_pages,
        overrides=parse_overrides(overrides),
    )
    print_report(report, as_json)
    sys.exit(0 if report.ok else 1)


@cli.command(name="list")
@source_option
@click.option("--since", help="Only articles published on or after this date.")
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one article per line.")
@pass_app
def list_articles(
    app: AppContext, sources: tuple[str, ...], since: str | None, limit: int, as_json: bool
) -> None:
    """List stored articles, newest first."""
    columns = "id, source, published, title, url, section, language, removed_at"
    with app.archive(create=False) as archive:
        rows = archive.iter_articles(
            sources=sources, since=parse_since(since), limit=limit, columns=columns
        )
        for row in rows:
            if as_json:
                emit_json(row)
            else:
                date = row["published"] or "----------"
                gone = " [removed]" if row["removed_at"] else ""
                click.echo(f"{row['id']:>6}  {date[:10]}  {safe_text(row['title'])}{gone}")


@cli.command()
@click.argument("article")
@click.option("--json", "as_json", is_flag=True)
@pass_app
def show(app: AppContext, article: str, as_json: bool) -> None:
    """Show one article by id or URL."""
    with app.archive(create=False) as archive:
        row = archive.get_article(article)
        if row is None:
            raise RunProblem(f"no article {article!r} in {archive.path}")
        row["revisions"] = len(archive.revisions(row["id"]))
    if as_json:
        emit_json(row)
        return
    click.echo(safe_text(row["title"]))
    for key in ("published", "url", "source", "section", "language", "first_seen", "removed_at"):
        if row.get(key):
            click.echo(f"{key + ':':<12}{safe_text(row[key])}")
    if row["revisions"] > 1:
        click.echo(f"{'revisions:':<12}{row['revisions']}")
    for link in json.loads(row.get("attachments") or "[]"):
        click.echo(f"{'attachment:':<12}{safe_text(link)}")
    click.echo("")
    click.echo(safe_text(row["body"], keep_newlines=True))


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@pass_app
def sources(app: AppContext, as_json: bool) -> None:
    """Configured sources with their article counts and last crawl."""
    archive = app.archive() if Path(app.config.database).exists() else None
    try:
        for source in app.config.sources:
            last = (archive.last_run(source.name) if archive else None) or {}
            row = {
                "name": source.name,
                "start_urls": list(source.start_urls),
                "articles": archive.count_articles(source.name) if archive else 0,
                "last_run": last.get("finished_at") or last.get("started_at"),
                "last_status": last.get("status"),
            }
            if as_json:
                emit_json(row)
            else:
                when = f"last {row['last_status']} {row['last_run']}" if last else "never crawled"
                urls = " ".join(source.start_urls)
                click.echo(f"{source.name}: {row['articles']} articles, {when} - {urls}")
    finally:
        if archive is not None:
            archive.close()


@cli.command()
@source_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object with the counts.")
@click.option("--alert-on-first-run", is_flag=True, help="Alert even on a source's baseline.")
@settings_option
@pass_app
def check(
    app: AppContext,
    sources: tuple[str, ...],
    as_json: bool,
    alert_on_first_run: bool,
    overrides: tuple[str, ...],
) -> None:
    """One monitoring tick: find new, edited and removed articles, deliver alerts."""
    report = run_spider(
        app,
        sources,
        mode="check",
        overrides=parse_overrides(overrides),
        alert_on_first_run=alert_on_first_run,
    )
    if as_json:
        data = report.as_dict()
        keys = ("requests", "new", "updated", "removed", "unchanged", "errors")
        emit_json(
            {key: data[key] for key in keys}
            | {"alerts_sent": report.alerts_sent, "alerts_pending": report.alerts_pending}
            | {"sources": report.sources}
        )
    else:
        print_report(report, as_json=False)
        click.echo(f"alerts: {report.alerts_sent} sent, {report.alerts_pending} pending")
    for error in report.delivery_errors:
        logging.getLogger("newsmon").warning("delivery: %s", error)
    sys.exit(0 if report.ok else 1)


@cli.command()
@source_option
@click.option("--every", help="Interval between checks: 30s, 15m, 2h (default: [schedule]).")
@click.option("--cron", help='Crontab expression, e.g. "*/15 * * * *" (UTC).')
@settings_option
@pass_app
def watch(
    app: AppContext,
    sources: tuple[str, ...],
    every: str | None,
    cron: str | None,
    overrides: tuple[str, ...],
) -> None:
    """Run checks on a schedule until SIGINT or SIGTERM."""
    from monitor.config import parse_duration, validate_cron
    from monitor.scheduler import watch as run_watch

    if every and cron:
        raise UsageProblem("give either --every or --cron, not both")
    config = app.config
    try:
        config.select_sources(sources)
        interval = parse_duration(every) if every else None
        crontab = validate_cron(cron) if cron else None
    except (ConfigError, ValueError) as exc:
        raise UsageProblem(str(exc)) from None
    if interval is None and crontab is None:
        interval, crontab = config.schedule.every, config.schedule.cron
    if interval is None and crontab is None:
        interval = 15 * 60.0
    if interval is not None and interval <= 0:
        raise UsageProblem("--every must be longer than zero")
    app.archive().close()
    run_watch(config, sources, every=interval, cron=crontab, overrides=parse_overrides(overrides))


@cli.command()
@click.option("--pending", "status", flag_value="pending", help="Only alerts waiting to be sent.")
@click.option("--failed", "status", flag_value="failed", help="Only alerts that gave up.")
@click.option("--retry", is_flag=True, help="Deliver pending and failed alerts now.")
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one alert per line.")
@pass_app
def alerts(app: AppContext, status: str | None, retry: bool, as_json: bool) -> None:
    """Show the alert outbox; --retry delivers what is waiting without the backoff."""
    from monitor.outbox import Outbox
    from monitor.runner import deliver_alerts

    config = app.config
    if not Path(config.database).exists():
        return  # no archive yet: an empty outbox (and none created by looking)
    if retry:
        from monitor.runner import AlreadyRunning, exclusive_lock

        try:  # never beside a check that is delivering the same rows
            with exclusive_lock(config.database):
                delivery = deliver_alerts(config, force=True)
        except AlreadyRunning as exc:
            raise RunProblem(str(exc)) from None
        click.echo(
            f"{delivery.sent} sent, {delivery.failed} failed to send, "
            f"{delivery.pending} still pending"
        )
    with app.archive(create=False) as archive:
        rows = Outbox(archive.db, config.channels()).list(status)
    for row in rows:
        if as_json:
            emit_json(row)
            continue
        payload = row.get("payload") or {}
        what = payload.get("title") or payload.get("reason") or ""
        click.echo(
            f"{row['id']:>6} {row['status']:<8} {row['event']:<13} {row['channel']:<12} "
            f"tries={row['attempts']} {safe_text(what)[:80]}"
            + (f"  last error: {safe_text(row['last_error'])}" if row.get("last_error") else "")
        )
    if retry and delivery.failed:
        sys.exit(1)


@cli.command()
def demo() -> None:
    """Try newsmon offline: crawl the bundled replica, publish an article, see the alert."""
    from monitor.demo import run_demo

    run_demo(click.echo)


@cli.command()
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--articles", type=click.IntRange(min=1), default=30, show_default=True)
def replica(port: int, host: str, articles: int) -> None:
    """Serve the bundled replica of the CSTO news section (for trying newsmon offline)."""
    from monitor.replica import serve

    try:
        serve(port, host=host, articles=articles)
    except OSError as exc:
        raise RunProblem(f"cannot listen on {host}:{port}: {exc.strerror}") from None


from monitor.cli_browse import browse, export, search  # noqa: E402

cli.add_command(search)
cli.add_command(export)
cli.add_command(browse)

from monitor.cli_sources import add_source, doctor  # noqa: E402

cli.add_command(doctor)
cli.add_command(add_source)


def main() -> None:
    cli(prog_name="newsmon")
