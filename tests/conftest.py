"""Shared fixtures: a real replica server on 127.0.0.1, config files, and the real CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from monitor.config import CSTO_SELECTORS as CSTO_PROFILE
from monitor.replica import Replica, ReplicaServer

CSTO_SELECTORS = "\n" + CSTO_PROFILE.as_toml()

FAST_SETTINGS = """
[settings]
DOWNLOAD_DELAY = 0
AUTOTHROTTLE_ENABLED = false
RETRY_TIMES = 1
RETRY_BACKOFF_BASE = 0
DOWNLOAD_TIMEOUT = 10
"""


@pytest.fixture
def replica() -> Iterator[ReplicaServer]:
    """English (25 articles) and Russian windows-1251 (12 articles) sections, 10 per page."""
    server = ReplicaServer(Replica(articles=25, per_page=10), Replica(articles=12, language="ru"))
    with server:
        yield server


QUIET_ENV = {**os.environ, "PYTHONWARNINGS": "ignore"}


def wait_for(condition: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    """Poll `condition` until it holds; fail, naming `what`, after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclass
class Workspace:
    """A folder with a newsmon.toml and its database, and a way to run the real CLI there."""

    path: Path

    @property
    def config(self) -> Path:
        return self.path / "newsmon.toml"

    @property
    def database(self) -> Path:
        return self.path / "newsmon.db"

    def write_config(self, text: str) -> Path:
        self.config.write_text(text, encoding="utf-8")
        return self.config

    def command(self, *args: str) -> list[str]:
        """`newsmon --config newsmon.toml ARGS`, as a subprocess runs it."""
        return [sys.executable, "-m", "monitor", "--config", str(self.config), *args]

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """`newsmon ... ARGS` in a subprocess to its end: one reactor per process."""
        return subprocess.run(
            self.command(*args),
            cwd=self.path,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=QUIET_ENV,
        )

    def start(self, *args: str, stdout: Any = subprocess.DEVNULL) -> subprocess.Popen[str]:
        """`newsmon ... ARGS` in a subprocess left running, its stderr piped: for tests that
        act on it (a signal, a kill) or read it while it runs."""
        return subprocess.Popen(
            self.command(*args),
            cwd=self.path,
            stdout=stdout,
            stderr=subprocess.PIPE,
            text=True,
            env=QUIET_ENV,
        )

    def run_json(self, *args: str) -> dict[str, Any]:
        result = self.run(*args, "--json")
        assert result.returncode in (0, 1), result.stderr
        return json.loads(result.stdout)

    def db(self) -> sqlite_utils.Database:
        return sqlite_utils.Database(self.database)


def source_block(name: str, url: str, language: str = "en", selectors: bool = True) -> str:
    block = f'\n[[sources]]\nname = "{name}"\nstart_urls = ["{url}"]\nlanguage = "{language}"\n'
    return block + (CSTO_SELECTORS if selectors else "")


def replica_config(server: ReplicaServer, *, extra: str = "", selectors: bool = True) -> str:
    """A config for both replica sections, politeness off, plus any extra TOML."""
    return (
        'database = "newsmon.db"\n'
        + extra
        + source_block("csto-en", server.en_url, "en", selectors)
        + source_block("csto-ru", server.ru_url, "ru", selectors)
        + FAST_SETTINGS
    )


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    return Workspace(tmp_path)
