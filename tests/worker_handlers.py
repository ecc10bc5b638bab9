"""Handlers for tests/test_workers.py, imported by the page worker process by name."""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any


def echo(prefix: str) -> Callable[[Any], Any]:
    """Answers each payload with `prefix` and the payload; "fail", "die", "hang" and "log"
    payloads misbehave as named."""

    def handle(payload: Any) -> Any:
        if payload == "fail":
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
