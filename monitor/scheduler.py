"""`newsmon watch`: checks on a schedule, in one long-lived process.

Design: one asyncio loop for the life of the process. Scrapy's asyncio reactor runs on it, and
APScheduler's AsyncIOScheduler schedules ticks on the same loop; each tick starts a fresh crawler
through AsyncCrawlerRunner (Twisted's reactor cannot be restarted, so a new CrawlerProcess per
tick is impossible). Compared with a subprocess per tick this keeps Scrapy's import and start-up
cost (about a second) out of every tick and lets SIGTERM reach the running crawl directly; each
tick's crawler, spider and archive connection are dropped when it ends, which keeps memory flat.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from monitor.config import Config
from monitor.runner import (
    AlreadyRunning,
    CrawlInterrupted,
    crawl_async,
    deliver_alerts,
    exclusive_lock,
    run_in_reactor,
)

logger = logging.getLogger("newsmon.watch")


def make_trigger(every: float | None, cron: str | None) -> BaseTrigger:
    """Interval or crontab, with jitter so that sites are not all hit on the minute."""
    if cron:
        return CronTrigger.from_crontab(cron, timezone="UTC")
    if not every or every <= 0:
        raise ValueError("a schedule needs a positive interval or a crontab expression")
    jitter = min(every * 0.1, 60.0)
    return IntervalTrigger(seconds=every, jitter=jitter if jitter >= 1 else None)


@dataclass
class Watcher:
    """Runs one check per tick; a failing tick is logged and the next one runs."""

    config: Config
    sources: tuple[str, ...] = ()
    ticks: int = 0
    max_ticks: int | None = None

    async def tick(self, process: Any) -> None:
        self.ticks += 1
        started = time.monotonic()
        try:
            with exclusive_lock(self.config.database, wait=0):
                report = await crawl_async(process, self.config, self.sources, mode="check")
                await asyncio.to_thread(deliver_alerts, self.config, report)
        except AlreadyRunning as exc:
            logger.warning("tick %d skipped: %s", self.ticks, exc)
            return
        except Exception as exc:  # one bad tick must not end the watch
            logger.error("tick %d failed: %s", self.ticks, exc, exc_info=logger.isEnabledFor(10))
            return
        logger.info(
            "tick %d: %d new, %d updated, %d removed, %d errors, %d requests, "
            "%d alerts sent, %d pending (%.1fs)",
            self.ticks,
            report.total("new"),
            report.total("updated"),
            report.total("removed"),
            report.total("errors"),
            report.requests,
            report.alerts_sent,
            report.alerts_pending,
            time.monotonic() - started,
        )


def watch(
    config: Config,
    sources: tuple[str, ...] = (),
    *,
    every: float | None = None,
    cron: str | None = None,
    overrides: dict[str, Any] | None = None,
) -> int:
    """Block until SIGINT/SIGTERM; return the number of ticks run."""
    trigger = make_trigger(every, cron)
    watcher = Watcher(config, sources)

    async def main(process: Any) -> int:
        scheduler = AsyncIOScheduler(event_loop=asyncio.get_running_loop(), timezone="UTC")
        scheduler.add_job(
            watcher.tick,
            trigger,
            args=[process],
            id="check",
            max_instances=1,  # never two ticks at once
            coalesce=True,  # missed runs collapse into one
            misfire_grace_time=None,
            next_run_time=_now(),
        )
        scheduler.start()
        logger.info("watching %s: %s", ", ".join(sources) or "all sources", _describe(trigger))
        stopped = asyncio.get_running_loop().create_future()
        _on_reactor_shutdown(stopped)
        try:
            await stopped
        finally:
            scheduler.shutdown(wait=False)
        return watcher.ticks

    try:
        return run_in_reactor(config, main, overrides)
    except CrawlInterrupted:  # a signal stopped the loop before main() returned: a clean stop
        return watcher.ticks


def _on_reactor_shutdown(stopped: asyncio.Future[None]) -> None:
    from twisted.internet import reactor

    def finish() -> None:
        if not stopped.done():
            stopped.set_result(None)

    reactor.addSystemEventTrigger("before", "shutdown", finish)


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


def _describe(trigger: BaseTrigger) -> str:
    if isinstance(trigger, IntervalTrigger):
        return f"every {trigger.interval.total_seconds():g}s"
    return str(trigger)
