"""Progress of a long crawl: a live line on a terminal, periodic log lines otherwise."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

from scrapy import signals
from scrapy.exceptions import NotConfigured
from twisted.internet import task

logger = logging.getLogger("newsmon.progress")


class Progress:
    """Scrapy extension; NEWSMON_PROGRESS_INTERVAL seconds between log lines (0 turns it off)."""

    def __init__(self, crawler: Any, interval: float, stream: Any = None) -> None:
        self.crawler = crawler
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty()
        self.interval = 0.5 if self.live else interval
        self.started = time.monotonic()
        self.loop: task.LoopingCall | None = None

    @classmethod
    def from_crawler(cls, crawler: Any) -> Progress:
        interval = crawler.settings.getfloat("NEWSMON_PROGRESS_INTERVAL", 30.0)
        if interval <= 0:
            raise NotConfigured
        extension = cls(crawler, interval)
        crawler.signals.connect(extension.opened, signal=signals.spider_opened)
        crawler.signals.connect(extension.closed, signal=signals.spider_closed)
        return extension

    def opened(self, spider: Any) -> None:
        self.started = time.monotonic()
        self.loop = task.LoopingCall(self.report)
        self.loop.start(self.interval, now=False)

    def counts(self) -> tuple[int, int, int]:
        session = getattr(self.crawler.spider, "session", None)
        runs = session.runs.values() if session else ()
        pages = sum(run.counts["pages"] for run in runs)
        stored = sum(run.counts["new"] + run.counts["updated"] for run in runs)
        requests = sum(run.counts["requests"] for run in runs)
        return pages, stored, requests

    def line(self) -> str:
        pages, stored, requests = self.counts()
        rate = requests / max(time.monotonic() - self.started, 1e-6)
        return f"{pages} listing pages, {stored} articles stored, {requests} requests, {rate:.1f}/s"

    def report(self) -> None:
        if self.live:
            self.stream.write("\r\x1b[2K" + self.line())
            self.stream.flush()
        else:
            logger.info("progress: %s", self.line())

    def closed(self, spider: Any) -> None:
        if self.loop is not None and self.loop.running:
            self.loop.stop()
        if self.live:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
