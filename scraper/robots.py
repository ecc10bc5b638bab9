"""robots.txt obeyed as Scrapy does, but fetched at most once a day per site.

Scrapy's RobotsTxtMiddleware downloads robots.txt at the start of every crawl; for a monitor
that checks every few minutes that doubles the cost of an unchanged tick. This subclass keeps
the body in the archive (table robots_cache) for ROBOTSTXT_CACHE_TTL seconds.
"""

from __future__ import annotations

from typing import Any

from scrapy.downloadermiddlewares.robotstxt import RobotsTxtMiddleware
from scrapy.http import Request, Response
from scrapy.utils.httpobj import urlparse_cached
from scrapy.utils.misc import build_from_crawler


class CachedRobotsTxtMiddleware(RobotsTxtMiddleware):
    def __init__(self, crawler: Any) -> None:
        super().__init__(crawler)
        self.ttl = crawler.settings.getfloat("ROBOTSTXT_CACHE_TTL", 86400.0)

    def _archive(self) -> Any:
        session = getattr(self.crawler.spider, "session", None)
        return getattr(session, "archive", None)

    async def robot_parser(self, request: Request) -> Any:
        netloc = urlparse_cached(request).netloc
        archive = self._archive()
        if netloc not in self._parsers and archive is not None and self.ttl > 0:
            body = archive.cached_robots(netloc, self.ttl)
            if body is not None:
                self._parsers[netloc] = build_from_crawler(self._parserimpl, self.crawler, body)
                self._stats.inc_value("robotstxt/cache_hit")
        return await super().robot_parser(request)

    async def _parse_robots(self, response: Response, netloc: str, request: Request) -> None:
        archive = self._archive()
        # A 4xx means "no rules" and is worth remembering; a 5xx is not an answer.
        if archive is not None and response.status < 500:
            body = response.body if response.status == 200 else b""
            archive.save_robots(netloc, body)
        await super()._parse_robots(response, netloc, request)
