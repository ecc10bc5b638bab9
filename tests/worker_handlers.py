"""Handlers for tests/test_workers.py, imported by the page worker process by name."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any


def echo(prefix: str) -> Callable[[Any], Any]:
    """Answers each payload with `prefix` and the payload; "fail", "die", "hang", "log", "log,
    then fail" and "slow" payloads misbehave as named."""

    def handle(payload: Any) -> Any:
        if payload == "slow":
            time.sleep(0.1)
        if payload == "fail":
            raise ValueError("no such page")
        if payload == "log, then fail":
            logging.getLogger("tests.worker").warning("read %s in the worker", payload)
            raise ValueError("no such page")
        if payload == "die":
            print("dying on purpose", file=sys.stderr, flush=True)
            os._exit(3)
        if payload == "hang":
            time.sleep(60)
        if payload == "log":
            logging.getLogger("tests.worker").warning("read %s in the worker", payload)
            logging.getLogger("tests.worker").debug("a detail the parent does not show")
        return (prefix, payload, os.getpid())

    return handle


def broken(_: Any) -> Callable[[Any], Any]:
    raise RuntimeError("cannot set up")


def reading_pages_reports_modules(sources: Any) -> Callable[[Any], Any]:
    """newsmon's page reader, answering with the top-level modules the worker has imported
    once it has read the page."""
    from scraper.article import page_reader

    read = page_reader(sources)

    def handle(page: Any) -> Any:
        read(page)
        return sorted({name.split(".")[0] for name in sys.modules})

    return handle
