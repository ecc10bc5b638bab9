"""The bookkeeping of one crawl or check: per-source counters, crawl_runs rows, alerts.

The spider decides what to fetch; the session remembers what happened, records each source's run
in `crawl_runs`, and raises `source_error` alerts when a source breaks.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from monitor.config import Config, SourceConfig
from storage.archive import Archive
from storage.normalize import canonical_url

logger = logging.getLogger(__name__)

COUNTERS = ("pages", "requests", "new", "updated", "removed", "unchanged", "errors")


@dataclass
class SourceRun:
    config: SourceConfig
    run_id: int
    alerting: bool
    backfill: bool  # no complete run yet: walk every listing page, not just the new ones
    counts: Counter[str] = field(default_factory=Counter)
    seen_pages: set[tuple[str, ...]] = field(default_factory=set)
    validators: dict[str, tuple[str | None, str | None]] = field(default_factory=dict)
    listing_ok: int = 0
    listing_failed: int = 0
    not_modified: int = 0
    entries: int = 0
    problems: dict[str, str] = field(default_factory=dict)  # stable key -> reason for a person
    notes: list[str] = field(default_factory=list)  # logged and kept in crawl_runs.message
    removals: list[int] = field(default_factory=list)  # article ids answering 404/410
    walk_done: bool = False  # the walk stopped by itself: the last page, or caught up
    cut_short: bool = False  # a page limit stopped the walk
    failed_articles: dict[str, str] = field(default_factory=dict)  # canonical URL -> reason
    listings_in_worker: int = 0  # listing pages the page worker is reading

    @property
    def name(self) -> str:
        return self.config.name

    def article_failed(self, url: str, reason: str) -> None:
        """Remember a new article that could not be fetched or read, to fetch it again."""
        self.failed_articles[canonical_url(url)] = reason

    def note(self, message: str) -> None:
        """A failure worth a log line and the run's message, but not (yet) an alert."""
        logger.warning("%s: %s", self.name, message)
        self.notes.append(message)

    def problem(self, key: str, reason: str) -> None:
        """A reason a person can act on; each key becomes one `source_error` alert a day."""
        if key not in self.problems:
            logger.warning("%s: %s", self.name, reason)
            self.problems[key] = reason

    def status(self) -> str:
        if self.listing_ok == 0 and self.not_modified == 0:
            return "failed"
        if self.entries == 0 and self.not_modified == 0:
            return "empty"
        return "ok"

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.name,
            "status": self.status(),
            **{k: self.counts[k] for k in COUNTERS},
        }


class CrawlSession:
    """Owns the archive connection and the outbox for the duration of one crawler run."""

    def __init__(self, config: Config, mode: str, *, alert_on_first_run: bool = False) -> None:
        self.config = config
        self.mode = mode
        self.archive = Archive(config.database, temp_in_memory=True)
        self.outbox = self._outbox() if mode == "check" else None
        self.alert_on_first_run = alert_on_first_run
        self.runs: dict[str, SourceRun] = {}

    def _outbox(self) -> Any:
        from monitor.outbox import Outbox

        return Outbox(self.archive.db, self.config.channels())

    def begin(self, source: SourceConfig) -> SourceRun:
        kind = "check" if self.mode == "check" else "crawl"
        baseline = self.archive.has_baseline(source.name)
        alerting = self.outbox is not None and (self.alert_on_first_run or baseline)
        backfill = self.archive.needs_backfill(source.name)
        run_id = self.archive.start_run(source.name, kind)
        run = SourceRun(source, run_id, alerting, backfill=backfill)
        self.runs[source.name] = run
        return run

    def change_hook(self, run: SourceRun):
        """The callback the archive runs inside an article's transaction to enqueue its alerts."""
        if not run.alerting or self.outbox is None:
            return None

        def enqueue(event: str, article: dict[str, Any]) -> None:
            self.outbox.enqueue(event, run.name, article)

        return enqueue

    def finish(self) -> list[dict[str, Any]]:
        """Close every source's run: crawl_runs row, validators, source_error alerts."""
        summaries = []
        for run in self.runs.values():
            status = run.status()
            if status == "ok" and run.listing_failed == 0:
                self._apply_removals(run)
            if status == "ok" and run.counts["errors"] == 0:
                with self.archive.db.atomic():  # one transaction, not one per listing page
                    for url, (etag, modified) in run.validators.items():
                        self.archive.save_validators(url, etag, modified)
            self._record_health(run, status)
            message = "; ".join([*run.notes, *run.problems.values()])
            # An interrupted, page-limited or broken walk leaves older pages to backfill. A failed
            # article is kept in failed_articles instead and fetched directly by the next runs.
            complete = (
                status == "ok" and run.walk_done and not run.cut_short and run.listing_failed == 0
            )
            self.archive.record_failed_articles(run.name, run.failed_articles)
            self.archive.finish_run(run.run_id, status, run.counts, message, complete=complete)
            summaries.append(run.summary())
        return summaries

    def _apply_removals(self, run: SourceRun) -> None:
        """Only a source whose listing answered may mark articles removed (and alert on it)."""
        hook = self.change_hook(run)
        for article_id in run.removals:
            if self.archive.mark_removed(article_id, on_change=hook):
                run.counts["removed"] += 1

    def _record_health(self, run: SourceRun, status: str) -> None:
        if status == "empty":
            listings = [*run.config.start_urls, run.config.feed_url, run.config.sitemap_url]
            where = ", ".join(url for url in listings if url)
            run.problem("empty", f"no entries found on {where}")
        if status == "failed":
            failures = self.archive.consecutive_failures(run.name) + 1
            if failures >= run.config.max_failures:
                run.problem("failures", f"failed {failures} checks in a row")
        if self.outbox is None or not run.problems:
            return
        day = datetime.now(UTC).date().isoformat()
        with self.archive.db.atomic():
            for key, reason in run.problems.items():
                dedupe = f"{key}|{day}"
                self.outbox.enqueue("source_error", run.name, None, reason=reason, dedupe=dedupe)

    def close(self) -> None:
        self.archive.close()
