"""`newsmon doctor` and `newsmon add-source`: thin commands over monitor.doctor and monitor.probe.

Registered on the main group in monitor/cli.py. This module does not import monitor.cli at load
time (monitor.cli imports it), so the shared error classes are looked up when a command runs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import click

from monitor.config import DEFAULT_CONFIG_PATH, DEFAULT_DATABASE, Config, ConfigError, SourceConfig
from monitor.terminal import safe_text
from storage.normalize import is_http_url


def _usage_problem(message: str) -> click.ClickException:
    from monitor.cli import UsageProblem

    return UsageProblem(message)


def _run_problem(message: str) -> click.ClickException:
    from monitor.cli import RunProblem

    return RunProblem(message)


def _overrides(values: tuple[str, ...]) -> dict[str, str]:
    from monitor.cli import parse_overrides

    return parse_overrides(values)


def _check_url(url: str | None, what: str) -> None:
    if url is not None and not is_http_url(url):
        raise _usage_problem(f"{what} must be an http(s) URL, not {url!r}")


def _fetch(config: Config, sources: Any, overrides: dict[str, str], **urls: Any) -> Any:
    from monitor.doctor import fetch_pages
    from monitor.runner import CrawlInterrupted

    try:
        return fetch_pages(config, sources, overrides, **urls)
    except CrawlInterrupted as exc:
        raise _run_problem(str(exc)) from None


@click.command()
@click.argument("url", required=False)
@click.option("--source", "source_name", metavar="NAME", help="The configured source to check.")
@click.option("--article", "article_url", metavar="URL", help="Check this article page.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per source.")
@click.option("-s", "--set", "overrides", multiple=True, metavar="NAME=VALUE", help="Setting.")
@click.pass_obj
def doctor(
    app: Any,
    url: str | None,
    source_name: str | None,
    article_url: str | None,
    as_json: bool,
    overrides: tuple[str, ...],
) -> None:
    """Show what a source yields, field by field, and where each value comes from.

    Fetches the listing page (URL, or the source's first start URL, feed or sitemap) and one
    article, and prints each field's value and origin: configured selector, fallback, automatic,
    feed or sitemap. Exits 1 when entries, the article title or its body cannot be found.
    """
    from monitor.doctor import diagnose

    _check_url(url, "URL")
    _check_url(article_url, "--article")
    config = app.config
    if source_name:
        try:
            sources = config.select_sources((source_name,))
        except ConfigError as exc:
            raise _usage_problem(str(exc)) from None
    elif url:
        sources = (SourceConfig(name="url", start_urls=(url,)),)
    else:
        sources = config.sources
    pages = _fetch(config, sources, _overrides(overrides), listing_url=url, article_url=article_url)
    diagnoses = [diagnose(pages[source.name]) for source in sources]
    for diagnosis in diagnoses:
        if as_json:
            click.echo(json.dumps(diagnosis.as_dict(), ensure_ascii=False))
        else:
            click.echo("\n".join(diagnosis.lines()))
    sys.exit(0 if all(d.ok for d in diagnoses) else 1)


@click.command(name="add-source")
@click.argument("url")
@click.option("--name", required=True, help="Name of the new source (letters, digits, - _ .).")
@click.option("--dry-run", is_flag=True, help="Print the block without writing it.")
@click.option("-s", "--set", "overrides", multiple=True, metavar="NAME=VALUE", help="Setting.")
@click.pass_obj
def add_source(app: Any, url: str, name: str, dry_run: bool, overrides: tuple[str, ...]) -> None:
    """Probe URL and append a ready [[sources]] block to the config file.

    Selectors are written where stable ones reproduce what automatic mode finds; the rest is
    left to automatic extraction. The file is created if missing; nothing in it is changed.
    """
    from monitor.probe import DuplicateSource, ProbeError, append_source, existing_names, probe

    _check_url(url, "URL")
    if not re.fullmatch(r"[\w.-]+", name):
        raise _usage_problem(f"--name {name!r}: use letters, digits, '-', '_', '.'")
    path = Path(app.config_path or DEFAULT_CONFIG_PATH)
    try:
        if name in existing_names(path):
            raise _usage_problem(f"{path}: a source named {name!r} exists already")
    except ConfigError as exc:
        raise _usage_problem(str(exc)) from None
    config = app.config if path.exists() else Config(None, Path(app.db_path or DEFAULT_DATABASE))
    try:
        result = probe(url, name, config, _overrides(overrides))
    except ProbeError as exc:
        raise _run_problem(str(exc)) from None
    block = result.block()
    if dry_run:
        click.echo(block.strip("\n"))
        return
    try:
        append_source(path, block, name)
    except DuplicateSource as exc:
        raise _usage_problem(str(exc)) from None
    except ConfigError as exc:
        raise _usage_problem(f"the new block would not load: {exc}") from None
    pinned = ", ".join(result.selectors) or "none (automatic mode)"
    click.echo(f"added source {name!r} to {safe_text(path)}: {result.entries} entries found")
    click.echo(f"selectors: {safe_text(pinned)}")
    if result.feed_url:
        click.echo(f"feed: {safe_text(result.feed_url)}")
    click.echo(block.strip("\n"))
    click.echo(f"check it with: newsmon doctor --source {name}")
