"""Logging for the CLI: newsmon's own lines at INFO, Scrapy's internals only when asked for."""

from __future__ import annotations

import logging
import sys

_scrapy_level = logging.WARNING
# Download failures these log are reported by the spider in one line; -v shows theirs too.
REPORTED_BY_NEWSMON = {
    "scrapy.core.scraper",
    "scrapy.downloadermiddlewares.retry",
    "scrapy.downloadermiddlewares.robotstxt",
}
LIBRARY_LOGGERS = (
    "scrapy",
    "twisted",
    "py",
    "apprise",
    "apscheduler",
    "trafilatura",
    "htmldate",
    "courlan",
    "filelock",
    "hpack",
    "asyncio",
)


def configure(verbose: int = 0, quiet: int = 0) -> None:
    """-v shows Scrapy's INFO lines, -vv its DEBUG lines; -q hides newsmon's INFO lines."""
    global _scrapy_level
    level = max(logging.INFO - 10 * verbose + 10 * quiet, logging.DEBUG)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(_library_threshold)
    if verbose == 0:
        handler.addFilter(_drop_tracebacks)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    _scrapy_level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.WARNING
    _scrapy_level = max(_scrapy_level, level)
    reapply()


def _library_threshold(record: logging.LogRecord) -> bool:
    """Scrapy resets its loggers' levels when a crawler starts, so filter at the handler."""
    if record.name in REPORTED_BY_NEWSMON and _scrapy_level >= logging.WARNING:
        return False
    if record.name.startswith("apprise") and record.levelno < logging.INFO:
        return False  # apprise's debug lines print notification URLs with their tokens
    if record.name.split(".", 1)[0] in LIBRARY_LOGGERS:
        return record.levelno >= _scrapy_level
    return True


def _drop_tracebacks(record: logging.LogRecord) -> bool:
    """Scrapy logs network failures with tracebacks; one line is enough (-v shows them)."""
    record.exc_info = None
    record.exc_text = None
    return True


def reapply() -> None:
    """Scrapy resets its loggers when a crawler process starts; put our levels back."""
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(_scrapy_level)
