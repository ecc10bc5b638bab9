"""`newsmon demo`: the whole product in under a minute, offline.

Starts the bundled CSTO replica on a free localhost port, crawls it into a fresh archive (the
baseline, which alerts nothing), publishes a new announcement on the replica, runs a check that
prints the alert, and leaves the archive behind for the user to browse.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from monitor.config import CSTO_SELECTORS, Config, SourceConfig
from monitor.replica import Replica, ReplicaServer
from monitor.runner import crawl_async, deliver_alerts, run_in_reactor

DEMO_TITLE = "CSTO Secretary General held talks with the UN Special Representative for Central Asia"
FAST_SETTINGS = {"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": False, "ROBOTSTXT_OBEY": True}


def demo_config(server: ReplicaServer, folder: Path) -> Config:
    return Config(
        path=None,
        database=folder / "newsmon.db",
        sources=(
            SourceConfig("csto-en", (server.en_url,), "en", CSTO_SELECTORS),
            SourceConfig("csto-ru", (server.ru_url,), "ru", CSTO_SELECTORS),
        ),
        alerts=({"type": "stdout", "events": ["new", "updated", "removed", "source_error"]},),
        settings=dict(FAST_SETTINGS),
    )


def run_demo(echo: Callable[[str], Any], folder: Path | None = None) -> Path:
    """Run the demo, printing as it goes; return the path of the archive it leaves behind."""
    folder = folder or Path(tempfile.mkdtemp(prefix="newsmon-demo-"))
    english, russian = Replica(articles=24, per_page=10), Replica(articles=12, language="ru")
    with ReplicaServer(english, russian) as server:
        config = demo_config(server, folder)
        echo(f"1. Replica of the CSTO news section serving at {server.en_url} and {server.ru_url}")

        async def main(process: Any) -> None:
            baseline = await crawl_async(process, config, mode="crawl")
            echo(
                f"2. Baseline crawl: {baseline.total('new')} articles stored in "
                f"{baseline.total('pages')} listing pages; a baseline alerts nothing."
            )
            article = english.publish(title=DEMO_TITLE)
            echo(f"3. The site publishes a new announcement: {article.title!r}")
            echo("4. newsmon check (one tick of `newsmon watch`) finds it and alerts:")
            report = await crawl_async(process, config, mode="check")
            await asyncio.to_thread(deliver_alerts, config, report)
            echo(
                f"   {report.total('new')} new, {report.requests} requests, "
                f"{report.alerts_sent} alert sent."
            )

        run_in_reactor(config, main)
    echo(f"5. The archive is at {config.database}. Try:")
    for command in ("list", "search Moscow", "show 1", "browse"):
        echo(f"     newsmon --db {config.database} {command}")
    return config.database
