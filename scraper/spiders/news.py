"""NewsSpider: one config-driven spider for every news source.

It walks listing pages and follows entries to article pages; what it extracts comes from the
source's selectors, with fallbacks when a selector is absent or stops matching. One spider serves
all selected sources together, so Scrapy's per-domain slots keep each site polite while many
sections are checked at once.

    scrapy crawl news -a source=csto-en          # from the repository root, through scrapy.cfg
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import urlsplit

import scrapy
from scrapy.http import Response, TextResponse
from twisted.python.failure import Failure

from monitor.config import Config, load_config
from scraper.extract import extract_article, extract_listing
from scraper.items import ArticleItem, RemovedItem
from scraper.session import CrawlSession, SourceRun
from storage.archive import utc_now
from storage.normalize import canonical_url

MODES = ("crawl", "full", "check")


class NewsSpider(scrapy.Spider):
    name = "news"

    def __init__(
        self,
        source: str | None = None,
        config: Config | str | None = None,
        mode: str | None = None,
        max_pages: int | str | None = None,
        alert_on_first_run: bool | str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._alert_first_arg = alert_on_first_run
        self.source_names = tuple(n for n in (source or "").split(",") if n)
        self._config_arg = config
        self._mode_arg = mode
        self.max_pages = int(max_pages) if max_pages else None

    @classmethod
    def from_crawler(cls, crawler: Any, *args: Any, **kwargs: Any) -> NewsSpider:
        spider = super().from_crawler(crawler, *args, **kwargs)
        spider._setup(crawler.settings)
        return spider

    def _setup(self, settings: Any) -> None:
        config = self._config_arg
        if not isinstance(config, Config):
            db = settings.get("NEWSMON_DB")
            config = load_config(config or settings.get("NEWSMON_CONFIG"), database=db)
        self.mode = self._mode_arg or settings.get("NEWSMON_MODE", "crawl")
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        self.sources = config.select_sources(self.source_names)
        self.allowed_domains = sorted(
            {urlsplit(url).hostname or "" for s in self.sources for url in s.start_urls}
        )
        alert_first = self._alert_first_arg
        if alert_first is None or isinstance(alert_first, str):
            alert_first = settings.getbool("NEWSMON_ALERT_ON_FIRST_RUN") or str(
                alert_first
            ).lower() in ("1", "true", "yes")
        self.session = CrawlSession(config, self.mode, alert_on_first_run=alert_first)

    # -- requests ---------------------------------------------------------------------------

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for source in self.sources:
            run = self.session.begin(source)
            for url in source.start_urls:
                yield self._listing_request(run, url, page=1)
            if self.mode == "check":
                for request in self._revisit_requests(run):
                    yield request

    def _listing_request(self, run: SourceRun, url: str, page: int) -> scrapy.Request:
        headers = {}
        if self.mode != "full":
            etag, modified = self.session.archive.validators(url)
            headers = _conditional_headers(etag, modified)
        return scrapy.Request(
            url,
            callback=self.parse_listing,
            errback=self.listing_failed,
            headers=headers,
            meta={"source": run.name, "page": page},
            priority=10,
            dont_filter=page == 1,
        )

    def _revisit_requests(self, run: SourceRun) -> Iterable[scrapy.Request]:
        due = self.session.archive.due_for_revisit(
            run.name,
            revisit_days=run.config.revisit_days,
            revisit_every=run.config.revisit_every,
        )
        for row in due:
            yield scrapy.Request(
                row["url"],
                callback=self.parse_article,
                errback=self.article_failed,
                headers=_conditional_headers(row["etag"], row["last_modified"]),
                meta={"source": run.name, "article_id": row["id"], "revisit": True},
                dont_filter=True,
            )

    # -- listing pages ----------------------------------------------------------------------

    def parse_listing(self, response: Response) -> Iterable[Any]:
        run = self.session.runs[response.meta["source"]]
        run.counts["requests"] += 1
        run.counts["pages"] += 1
        if response.status == 304:
            run.not_modified += 1
            return
        if response.status >= 400 or not isinstance(response, TextResponse):
            run.listing_failed += 1
            run.counts["errors"] += 1
            run.note(f"listing page {response.url} answered {_describe(response)}")
            return
        run.listing_ok += 1
        listing = extract_listing(response, response.url, run.config.selectors)
        self._note_fallbacks(run, listing.origin, response.url)
        urls = [canonical_url(entry.url) for entry in listing.entries]
        fingerprint = tuple(urls)
        if fingerprint in run.seen_pages:  # Bitrix repeats its last page past the end
            return
        run.seen_pages.add(fingerprint)
        run.entries += len(urls)
        run.validators[response.url] = (
            _header(response, "ETag"),
            _header(response, "Last-Modified"),
        )
        known = self.session.archive.known_urls(urls)
        fresh = [(url, entry) for url, entry in zip(urls, listing.entries, strict=True)]
        if self.mode != "full":
            fresh = [(url, entry) for url, entry in fresh if url not in known]
        for url, entry in fresh:
            yield response.follow(
                entry.url,
                callback=self.parse_article,
                errback=self.article_failed,
                meta={"source": run.name, "entry": entry, "canonical": url},
            )
        if listing.next_page and self._should_continue(run, response.meta["page"], fresh):
            yield self._listing_request(run, listing.next_page, response.meta["page"] + 1)

    def _should_continue(self, run: SourceRun, page: int, fresh: list[Any]) -> bool:
        limit = self.max_pages or run.config.max_pages
        if limit is not None and page >= limit:
            return False
        # Until a run has finished cleanly, an interrupted backfill may have left older pages
        # unvisited behind pages whose entries are all stored: keep walking.
        return self.mode == "full" or run.backfill or bool(fresh)

    def _note_fallbacks(self, run: SourceRun, origin: dict[str, str], url: str) -> None:
        for key, where in origin.items():
            if where == "fallback" and key != "next_page":  # the last page has no next link
                run.problem(f"selector:{key}", f"selector `{key}` matched nothing on {url}")

    def listing_failed(self, failure: Failure) -> None:
        request = failure.request
        run = self.session.runs[request.meta["source"]]
        run.counts["requests"] += 1
        run.counts["errors"] += 1
        run.listing_failed += 1
        reason = failure.getErrorMessage() or failure.type.__name__
        run.note(f"listing page {request.url} failed: {reason}")

    # -- article pages ----------------------------------------------------------------------

    def parse_article(self, response: Response) -> Iterable[Any]:
        meta = response.meta
        run = self.session.runs[meta["source"]]
        run.counts["requests"] += 1
        if meta.get("revisit") and response.status in (404, 410):
            yield RemovedItem(run.name, meta["article_id"], response.url, response.status)
            return
        if meta.get("revisit") and response.status == 304:
            run.counts["unchanged"] += 1
            self.session.archive.mark_checked(meta["article_id"], **_validators(response))
            return
        if response.status >= 400 or not isinstance(response, TextResponse):
            run.counts["errors"] += 1
            self.logger.warning("%s: article %s: %s", run.name, response.url, _describe(response))
            return
        yield self._article_item(run, response)

    def _article_item(self, run: SourceRun, response: TextResponse) -> ArticleItem:
        fields = extract_article(response, response.url, run.config.selectors)
        self._note_fallbacks(run, fields.origin, response.url)
        entry = response.meta.get("entry")
        return ArticleItem(
            source=run.name,
            url=response.url,
            language=run.config.language,
            title=fields.title,
            date_text=fields.date,
            listing_title=entry.title if entry else None,
            listing_date=entry.date if entry else None,
            summary=entry.summary if entry else None,
            body_html=fields.body_html,
            canonical=fields.canonical,
            attachments=fields.attachments,
            fetched_at=utc_now(),
            article_id=response.meta.get("article_id"),
            **_validators(response),
        )

    def article_failed(self, failure: Failure) -> None:
        request = failure.request
        run = self.session.runs[request.meta["source"]]
        run.counts["requests"] += 1
        run.counts["errors"] += 1
        self.logger.warning("%s: article %s failed: %s", run.name, request.url, failure.value)

    # -- end --------------------------------------------------------------------------------

    def closed(self, reason: str) -> None:
        self.summaries = self.session.finish()
        self.crawler.stats.set_value("newsmon/summaries", self.summaries)
        self.session.close()


def _header(response: Response, name: str) -> str | None:
    value = response.headers.get(name)
    return value.decode("latin-1") if value else None


def _validators(response: Response) -> dict[str, str | None]:
    return {"etag": _header(response, "ETag"), "last_modified": _header(response, "Last-Modified")}


def _conditional_headers(etag: str | None, modified: str | None) -> dict[str, str]:
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if modified:
        headers["If-Modified-Since"] = modified
    return headers


def _describe(response: Response) -> str:
    if response.status >= 400:
        return f"HTTP {response.status}"
    content_type = _header(response, "Content-Type") or "no content type"
    return f"a non-HTML response ({content_type})"
