"""Scrapy settings for newsmon: polite defaults for real sites, components wired by dotted path.

Tests and benchmarks turn politeness off with `-s DOWNLOAD_DELAY=0 -s AUTOTHROTTLE_ENABLED=False`.
"""

BOT_NAME = "newsmon"
SPIDER_MODULES = ["scraper.spiders"]
NEWSPIDER_MODULE = "scraper.spiders"

USER_AGENT = "newsmon/0.1 (+https://pypi.org/project/newsmon/; news archive and monitor)"
ROBOTSTXT_OBEY = True
ROBOTSTXT_CACHE_TTL = 24 * 3600  # seconds a fetched robots.txt is reused (scraper/robots.py)

# Politeness: one site is visited slowly even when many of its sections are watched.
CONCURRENT_REQUESTS = 32
CONCURRENT_REQUESTS_PER_DOMAIN = 2
DOWNLOAD_DELAY = 1.0
DOWNLOAD_DELAY_JITTER = 0.5  # ±50%, so visits do not fall on a fixed beat
AUTOTHROTTLE_ENABLED = True
AUTOTHROTTLE_START_DELAY = 1.0
AUTOTHROTTLE_MAX_DELAY = 30.0
AUTOTHROTTLE_TARGET_CONCURRENCY = 1.0
DOWNLOAD_TIMEOUT = 30
DOWNLOAD_MAXSIZE = 10 * 1024 * 1024
DOWNLOAD_WARNSIZE = 0

RETRY_ENABLED = True
RETRY_TIMES = 3
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408, 429]
# Retries wait (scraper/middlewares.py, in place of Scrapy's RetryMiddleware, which retries at
# once and ignores Retry-After): a 429/503 with Retry-After waits what the site asks, anything
# else retryable waits RETRY_BACKOFF_BASE seconds, doubling per retry; both capped here.
RETRY_AFTER_MAX = 120
RETRY_BACKOFF_BASE = 1.0

# Article pages that vanished (404/410) and conditional answers (304) reach the spider.
HTTPERROR_ALLOWED_CODES = [304, 404, 410]
REDIRECT_ENABLED = True
COOKIES_ENABLED = False
TELNETCONSOLE_ENABLED = False
# Scrapy 2.19 serves every crawl to its MCP server: an HTTP port that runs code sent to it, with
# a job file holding the token under ~/.local/state/scrapy (left there when a crawl is killed).
# An unattended monitor has no use for it.
REMOTE_CONTROL_ENABLED = False
LOG_LEVEL = "INFO"

DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.robotstxt.RobotsTxtMiddleware": None,
    "scraper.robots.CachedRobotsTxtMiddleware": 100,
    "scrapy.downloadermiddlewares.retry.RetryMiddleware": None,
    "scraper.middlewares.RetryAfterMiddleware": 550,
    # Scrapy's redirect middlewares, refusing off-site targets (scraper/middlewares.py)
    "scrapy.downloadermiddlewares.redirect.MetaRefreshMiddleware": None,
    "scraper.middlewares.OffsiteMetaRefreshMiddleware": 580,
    "scrapy.downloadermiddlewares.redirect.RedirectMiddleware": None,
    "scraper.middlewares.OffsiteRedirectMiddleware": 600,
    "scraper.middlewares.RequestCountMiddleware": 850,  # DownloaderStats' place
}
# Scrapy's DownloaderStats sizes every request and response (its byte counts are not shown by
# newsmon); RequestCountMiddleware counts the requests that the run report gives.
DOWNLOADER_STATS = False
# newsmon bounds a walk by listing pages (max_pages), never by link depth: DepthMiddleware
# would only stamp every request with a depth and keep a stat of it.
SPIDER_MIDDLEWARES = {"scrapy.spidermiddlewares.depth.DepthMiddleware": None}

EXTENSIONS = {"scraper.progress.Progress": 500}
NEWSMON_PROGRESS_INTERVAL = 30  # seconds between progress lines when not on a terminal

# Items per callback processed concurrently. Scrapy starts this many asyncio tasks for every
# callback's output, whatever it yields; newsmon's pipelines are synchronous and an article page
# yields one item, so the default 100 only cost ~100 tasks per page (a third of a backfill's CPU).
CONCURRENT_ITEMS = 1
# Scrapy reads and parses a generator callback's source to warn its author about `return value`
# in it. The result is cached per callback object, and a response that holds no cycle frees its
# request, so the cache empties and the source is parsed again: up to once per page. newsmon's
# callbacks are its own, fixed and tested, so the check has no one to warn.
WARN_ON_GENERATOR_RETURN_VALUE = False

# Articles are written in batches (scraper/pipelines.py StorePipeline): one transaction per
# STORE_BATCH_SIZE articles, and none waits longer than STORE_BATCH_SECONDS.
STORE_BATCH_SIZE = 250
STORE_BATCH_SECONDS = 2.0

# Pages are read (parsed, extracted, normalized) by a second process, a Scrapy-free interpreter,
# once a crawl has read NEWSMON_PAGE_WORKER_AFTER article pages itself (scraper/workers.py): a
# backfill then uses two cores. It reads article pages, and listing pages once it is ready. A
# worker that answers nothing for NEWSMON_PAGE_WORKER_TIMEOUT seconds while pages wait is
# stopped, and pages are read in the crawl's own process again.
NEWSMON_PAGE_WORKER = True
NEWSMON_PAGE_WORKER_AFTER = 20
NEWSMON_PAGE_WORKER_TIMEOUT = 60.0

ITEM_PIPELINES = {
    "scraper.pipelines.NormalizePipeline": 100,
    "scraper.pipelines.StorePipeline": 300,
}

TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
FEED_EXPORT_ENCODING = "utf-8"

# newsmon's own settings (the CLI fills them; `scrapy crawl news` falls back to these).
NEWSMON_CONFIG = None  # path of newsmon.toml; None: ./newsmon.toml or the built-in CSTO sources
NEWSMON_DB = None  # path of the SQLite archive; None: the config's `database`
NEWSMON_MODE = "crawl"  # "crawl" (stop at known entries), "full" (everything), "check" (monitor)
NEWSMON_ALERT_ON_FIRST_RUN = False
