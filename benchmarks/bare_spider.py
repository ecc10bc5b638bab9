"""The floor for newsmon's backfill: a bare Scrapy spider that walks the same pages, keeps nothing.

It follows the replica's listing pages (``a.modern-page-next``) and requests every entry's article
page (``div.news-item a.news-title``) exactly as newsmon's spider does (same URLs, listing pages
first by priority, Scrapy's duplicate filter), and does nothing with the answers. With
``-a follow=0`` it only fetches the start URLs (the many-sources baseline). With ``-a extract=1``
it also parses each article page and yields its title, date, body and canonical link with the
selectors newsmon is configured with, and keeps nothing: how much of a backfill is reading pages
at all, whoever does it.

    python -m scrapy runspider benchmarks/bare_spider.py -a start_url=http://127.0.0.1:8000/news/ \
        -s DOWNLOAD_DELAY=0 -s AUTOTHROTTLE_ENABLED=False -s CONCURRENT_REQUESTS_PER_DOMAIN=16

Run it from a folder without a scrapy.cfg, or Scrapy loads that project's settings too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import scrapy
from scrapy.http import Response


class BareSpider(scrapy.Spider):
    name = "bare"
    # What newsmon's settings share with any polite crawler; `-s` on the command line wins.
    custom_settings = {
        "ROBOTSTXT_OBEY": True,
        "LOG_LEVEL": "INFO",  # Scrapy's default DEBUG logs every request: not a fair floor
        "TELNETCONSOLE_ENABLED": False,
        "REMOTE_CONTROL_ENABLED": False,  # Scrapy 2.19's code-running HTTP port, off in newsmon
        "COOKIES_ENABLED": False,
        # Scrapy starts CONCURRENT_ITEMS asyncio tasks for every callback's output, even an empty
        # one; newsmon sets 1 (its pipelines are synchronous), and so does the floor.
        "CONCURRENT_ITEMS": 1,
        # newsmon turns off Scrapy's source check of generator callbacks (re-parsed up to once a
        # page, see scraper/settings.py); so does the floor.
        "WARN_ON_GENERATOR_RETURN_VALUE": False,
    }

    def __init__(
        self,
        start_url: str | None = None,
        urls_file: str | None = None,
        follow: str = "1",
        extract: str = "0",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.urls = [start_url] if start_url else []
        if urls_file:
            with open(urls_file, encoding="utf-8") as lines:
                self.urls += [line.strip() for line in lines if line.strip()]
        self.follow = str(follow).lower() not in ("0", "false", "no")
        self.extract = str(extract).lower() not in ("0", "false", "no")

    async def start(self) -> AsyncIterator[scrapy.Request]:
        for url in self.urls:
            yield scrapy.Request(url, callback=self.parse, dont_filter=True, priority=10)

    def parse(self, response: Response) -> Iterator[scrapy.Request]:
        if not self.follow:
            return
        for href in response.css("div.news-item a.news-title::attr(href)").getall():
            yield response.follow(href, callback=self.parse_article)
        next_page = response.css("a.modern-page-next::attr(href)").get()
        if next_page:
            yield response.follow(next_page, callback=self.parse, priority=10)

    def parse_article(self, response: Response) -> Iterator[dict[str, Any]]:
        if self.extract:
            yield {
                "title": response.css(".news-detail h1::text").get(),
                "date": response.css(".news-date-time::text").get(),
                "body": "".join(response.css(".news-detail-text").getall()),
                "canonical": response.css("link[rel=canonical]::attr(href)").get(),
            }
