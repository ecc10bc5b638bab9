"""The TOML configuration: sources to watch, alert channels, schedule and Scrapy overrides.

Every mistake a user can make here becomes one `ConfigError` line naming the file, the block and
the key, so the CLI can print it and exit 2 instead of failing halfway through a crawl.
"""

from __future__ import annotations

import json
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from parsel import Selector

from storage.normalize import is_http_url

DEFAULT_CONFIG_PATH = Path("newsmon.toml")
DEFAULT_DATABASE = "newsmon.db"


TYPE_NAMES = {str: "a string", int: "a number", float: "a number", bool: "true or false"}


class ConfigError(Exception):
    """A configuration problem, already phrased as one line for the user."""


@dataclass(frozen=True)
class Selectors:
    """Scrapy CSS (with ::text / ::attr()) or "xpath:..." expressions; None means "use fallback"."""

    item: str | None = None
    link: str | None = None
    title: str | None = None
    date: str | None = None
    summary: str | None = None
    next_page: str | None = None
    article_title: str | None = None
    article_date: str | None = None
    article_body: str | None = None

    def configured(self) -> dict[str, str]:
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name)}

    def as_toml(self) -> str:
        """The `[sources.selectors]` table for a config file (JSON strings are TOML strings)."""
        lines = [f"{key} = {json.dumps(value)}" for key, value in self.configured().items()]
        return "\n".join(["[sources.selectors]", *lines]) + "\n"


CSTO_SELECTORS = Selectors(
    item="div.news-item",
    link="a.news-title::attr(href)",
    title="a.news-title::text",
    date=".news-date::text",
    summary=".news-preview",
    next_page="a.modern-page-next::attr(href)",
    article_title=".news-detail h1::text",
    article_date=".news-date-time::text",
    article_body=".news-detail-text",
)


@dataclass(frozen=True)
class SourceConfig:
    name: str
    start_urls: tuple[str, ...]
    language: str | None = None
    selectors: Selectors = field(default_factory=Selectors)
    revisit_days: float = 3.0
    revisit_every: float = 6 * 3600.0
    max_pages: int | None = None
    max_failures: int = 3
    feed_url: str | None = None  # RSS/Atom listing, read with feedparser
    sitemap_url: str | None = None  # sitemap (or sitemap index) listing

    @property
    def automatic(self) -> bool:
        """No selectors: entries, pagination and article fields are found automatically."""
        return not self.selectors.configured()


DEFAULT_SOURCES = (
    SourceConfig("csto-en", ("https://en.odkb-csto.org/news/",), "en", CSTO_SELECTORS),
    SourceConfig("csto-ru", ("https://odkb-csto.org/news/",), "ru", CSTO_SELECTORS),
)


@dataclass(frozen=True)
class Schedule:
    every: float | None = None
    cron: str | None = None


@dataclass
class Config:
    path: Path | None
    database: Path
    sources: tuple[SourceConfig, ...] = DEFAULT_SOURCES
    alerts: tuple[dict[str, Any], ...] = ()
    schedule: Schedule = field(default_factory=Schedule)
    settings: dict[str, Any] = field(default_factory=dict)

    def select_sources(self, names: tuple[str, ...] | list[str] = ()) -> tuple[SourceConfig, ...]:
        """The named sources (all when none are named); unknown names are a ConfigError."""
        if not names:
            return self.sources
        known = {source.name: source for source in self.sources}
        missing = [name for name in names if name not in known]
        if missing:
            raise ConfigError(
                f"unknown source {missing[0]!r}; configured sources: {', '.join(known)}"
            )
        return tuple(known[name] for name in dict.fromkeys(names))

    def channels(self) -> list[Any]:
        from monitor.alerts import build_channels

        return build_channels(list(self.alerts))


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | int | float) -> float:
    """ "30s", "15m", "2h", "1h30m", "1d" (or a number of seconds) into seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text < 0:
            raise ValueError("a duration cannot be negative")
        return float(text)
    if not isinstance(text, str):
        raise ValueError(f"expected a duration like '15m', not {text!r}")
    compact = text.replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts).lower() != compact.lower():
        raise ValueError(f"expected a duration like '30s', '15m' or '2h', not {text!r}")
    return sum(float(number) * _UNIT_SECONDS[unit.lower()] for number, unit in parts)


def validate_selector(expression: str) -> None:
    """Raise ValueError when parsel cannot compile the expression."""
    probe = Selector(text="<html><body></body></html>")
    try:
        if expression.startswith("xpath:"):
            probe.xpath(expression[len("xpath:") :])
        else:
            probe.css(expression)
    except Exception as exc:  # parsel raises several types (SelectorSyntaxError, ValueError)
        raise ValueError(f"invalid selector {expression!r}: {exc}") from exc


def load_config(path: str | Path | None = None, *, database: str | Path | None = None) -> Config:
    """Read the config file (or the built-in CSTO defaults when the default file is absent)."""
    explicit = path is not None
    config_path = Path(path) if explicit else DEFAULT_CONFIG_PATH
    if not config_path.exists():
        if explicit:
            raise ConfigError(f"{config_path}: config file not found")
        return Config(path=None, database=Path(database or DEFAULT_DATABASE))
    try:
        data = tomllib.loads(config_path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{config_path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{config_path}: cannot read: {exc.strerror}") from exc
    return _ConfigReader(config_path).build(data, database)


class _ConfigReader:
    """Turns the parsed TOML into a Config, naming the file, block and key in every error."""

    TOP_KEYS = {"database", "sources", "alerts", "schedule", "settings"}
    SOURCE_KEYS = {
        "name",
        "start_urls",
        "language",
        "selectors",
        "revisit_days",
        "revisit_every",
        "max_pages",
        "max_failures",
        "feed_url",
        "sitemap_url",
    }

    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, message: str) -> ConfigError:
        message = " ".join(message.split())  # one line, even when lxml quotes a multi-line xpath
        return ConfigError(
            f"{self.path}: {where}: {message}" if where else f"{self.path}: {message}"
        )

    def build(self, data: dict[str, Any], database: str | Path | None) -> Config:
        self._reject_unknown(data, self.TOP_KEYS, "")
        db = database or self._typed(data, "database", str, "") or DEFAULT_DATABASE
        db_path = Path(db).expanduser()
        if not db_path.is_absolute() and database is None:
            db_path = self.path.parent / db_path
        sources = self._sources(data.get("sources"))
        return Config(
            path=self.path,
            database=db_path,
            sources=sources,
            alerts=self._alerts(data.get("alerts", []), {source.name for source in sources}),
            schedule=self._schedule(data.get("schedule", {})),
            settings=self._settings(data.get("settings", {})),
        )

    def _reject_unknown(self, table: dict[str, Any], allowed: set[str], where: str) -> None:
        for key in table:
            if key not in allowed:
                hint = ", ".join(sorted(allowed))
                raise self.fail(where, f"unknown key {key!r} (expected one of: {hint})")

    def _typed(self, table: dict[str, Any], key: str, kind: type | tuple, where: str) -> Any:
        value = table.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
            if kind is bool and isinstance(value, bool):
                return value
            kinds = kind if isinstance(kind, tuple) else (kind,)
            names = " or ".join(dict.fromkeys(TYPE_NAMES.get(k, k.__name__) for k in kinds))
            raise self.fail(where, f"key {key!r} must be {names}, not {value!r}")
        return value

    def _sources(self, raw: Any) -> tuple[SourceConfig, ...]:
        if raw is None:
            return DEFAULT_SOURCES
        if not isinstance(raw, list) or not raw:
            raise self.fail("", "'sources' must be one or more [[sources]] tables")
        sources = tuple(self._source(block, index) for index, block in enumerate(raw))
        names = [source.name for source in sources]
        for name in names:
            if names.count(name) > 1:
                raise self.fail(f"source {name!r}", "key 'name' is used by two sources")
        return sources

    def _source(self, block: Any, index: int) -> SourceConfig:
        where = f"sources[{index}]"
        if not isinstance(block, dict):
            raise self.fail(where, "must be a table")
        name = self._typed(block, "name", str, where)
        if not name or not re.fullmatch(r"[\w.-]+", name):
            raise self.fail(where, "key 'name' is required: letters, digits, '-', '_', '.'")
        where = f"source {name!r}"
        self._reject_unknown(block, self.SOURCE_KEYS, where)
        feed_url = self._listing_url(block, "feed_url", where)
        sitemap_url = self._listing_url(block, "sitemap_url", where)
        return SourceConfig(
            name=name,
            start_urls=self._start_urls(block, where, optional=bool(feed_url or sitemap_url)),
            language=self._typed(block, "language", str, where),
            selectors=self._selectors(block.get("selectors"), where),
            revisit_days=self._number(block, "revisit_days", 3.0, where),
            revisit_every=self._duration(block, "revisit_every", "6h", where),
            max_pages=self._positive_int(block, "max_pages", None, where),
            max_failures=self._positive_int(block, "max_failures", 3, where),
            feed_url=feed_url,
            sitemap_url=sitemap_url,
        )

    def _listing_url(self, block: dict[str, Any], key: str, where: str) -> str | None:
        url = self._typed(block, key, str, where)
        if url is not None and not is_http_url(url):
            raise self.fail(where, f"key {key!r}: only http(s) URLs are fetched: {url!r}")
        return url

    def _start_urls(
        self, block: dict[str, Any], where: str, optional: bool = False
    ) -> tuple[str, ...]:
        """Required, unless the source is listed by its feed_url or sitemap_url."""
        urls = block.get("start_urls")
        if urls is None and optional:
            return ()
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
            raise self.fail(where, "key 'start_urls' must be a list of one or more URLs")
        for url in urls:
            if not is_http_url(url):
                raise self.fail(where, f"key 'start_urls': only http(s) URLs are fetched: {url!r}")
        return tuple(urls)

    def _selectors(self, raw: Any, where: str) -> Selectors:
        if raw is None:
            return Selectors()
        where = f"{where} selectors"
        if not isinstance(raw, dict):
            raise self.fail(where, "must be a table")
        allowed = {f.name for f in fields(Selectors)}
        self._reject_unknown(raw, allowed, where)
        for key, value in raw.items():
            self._typed(raw, key, str, where)
            try:
                validate_selector(value)
            except ValueError as exc:
                raise self.fail(where, f"key {key!r}: {exc}") from None
        return Selectors(**raw)

    def _number(self, block: dict[str, Any], key: str, default: float, where: str) -> float:
        value = self._typed(block, key, (int, float), where)
        if value is not None and value < 0:
            raise self.fail(where, f"key {key!r} cannot be negative")
        return float(default if value is None else value)

    def _positive_int(self, block: dict[str, Any], key: str, default: Any, where: str) -> Any:
        value = self._typed(block, key, int, where)
        if value is not None and value < 1:
            raise self.fail(where, f"key {key!r} must be at least 1")
        return default if value is None else value

    def _duration(self, block: dict[str, Any], key: str, default: str, where: str) -> float:
        try:
            return parse_duration(block.get(key, default))
        except ValueError as exc:
            raise self.fail(where, f"key {key!r}: {exc}") from None

    def _alerts(self, raw: Any, source_names: set[str]) -> tuple[dict[str, Any], ...]:
        if not isinstance(raw, list) or not all(isinstance(b, dict) for b in raw):
            raise self.fail("", "'alerts' must be [[alerts]] tables")
        from monitor.alerts import ChannelConfigError, build_channels

        try:
            channels = build_channels(raw)
        except ChannelConfigError as exc:
            raise self.fail("", str(exc)) from None
        raw = [self._resolve_paths(block) for block in raw]
        for index, channel in enumerate(channels):
            unknown = sorted((channel.sources or set()) - source_names)
            if unknown:
                where = f"alerts[{index}] ({channel.name})"
                raise self.fail(where, f"key 'sources': no source named {unknown[0]!r}")
        return tuple(raw)

    def _resolve_paths(self, block: dict[str, Any]) -> dict[str, Any]:
        """A relative file path in a channel means next to the config, like `database`."""
        path = block.get("path")
        if isinstance(path, str) and not Path(path).expanduser().is_absolute():
            return {**block, "path": str(self.path.parent / path)}
        return block

    def _schedule(self, raw: Any) -> Schedule:
        if not isinstance(raw, dict):
            raise self.fail("schedule", "must be a table")
        self._reject_unknown(raw, {"every", "cron"}, "schedule")
        if "every" in raw and "cron" in raw:
            raise self.fail("schedule", "give either 'every' or 'cron', not both")
        try:
            every = parse_duration(raw["every"]) if "every" in raw else None
            cron = validate_cron(raw["cron"]) if "cron" in raw else None
        except ValueError as exc:
            raise self.fail("schedule", str(exc)) from None
        if every is not None and every <= 0:
            raise self.fail("schedule", "key 'every' must be longer than zero")
        return Schedule(every=every, cron=cron)

    def _settings(self, raw: Any) -> dict[str, Any]:
        if not isinstance(raw, dict):
            raise self.fail("settings", "must be a table of Scrapy settings")
        for key, value in raw.items():
            if not re.fullmatch(r"[A-Z][A-Z0-9_]*", key):
                raise self.fail("settings", f"key {key!r} is not a Scrapy setting name")
            try:
                check_setting(key, value)
            except ValueError as exc:
                raise self.fail("settings", str(exc)) from None
        return dict(raw)


def check_setting(name: str, value: Any) -> None:
    """A Scrapy setting whose default is a number or a flag must read as one (Scrapy would
    otherwise fail mid-crawl with a traceback)."""
    from scrapy.settings import BaseSettings, default_settings

    default = getattr(default_settings, name, None)
    kind = {bool: "getbool", int: "getfloat", float: "getfloat"}.get(type(default))
    if kind is None:
        return
    try:
        getattr(BaseSettings({name: value}), kind)(name)
    except (TypeError, ValueError):
        expected = "true or false" if kind == "getbool" else "a number"
        raise ValueError(f"setting {name} must be {expected}, not {value!r}") from None


def validate_cron(expression: Any) -> str:
    """Check a crontab expression with APScheduler, which will run it."""
    from apscheduler.triggers.cron import CronTrigger

    if not isinstance(expression, str):
        raise ValueError(f"key 'cron' must be a string like '*/15 * * * *', not {expression!r}")
    try:
        CronTrigger.from_crontab(expression)
    except ValueError as exc:
        raise ValueError(f"key 'cron': invalid crontab {expression!r}: {exc}") from None
    return expression
