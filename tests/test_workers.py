"""The page worker (scraper/workers.py): a real second process on a real socket.

It only ever speeds a crawl up, so every way it can fail must leave the caller a clean
WorkerUnavailable (the spider then reads the page itself), and the crawl's results must not
depend on whether it ran.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.config import CSTO_SELECTORS, SourceConfig
from monitor.replica import ReplicaServer
from scraper.workers import PageWorker, WorkerUnavailable
from tests.conftest import Workspace, replica_config, source_block

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(test: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(test(), 30))


async def started(factory: str = "tests.worker_handlers:echo", timeout: float = 20) -> PageWorker:
    worker = PageWorker(factory, "hello", timeout=timeout)
    assert await worker.start()
    for _ in range(500):
        if worker.ready:
            return worker
        await asyncio.sleep(0.01)
    raise AssertionError("the worker never became ready")


def test_the_worker_answers_each_payload_with_its_handler_in_another_process() -> None:
    async def scenario() -> list[Any]:
        worker = await started()
        try:
            return await asyncio.gather(*(worker.run(n) for n in range(20)))
        finally:
            worker.close()

    answers = run(scenario)
    assert [payload for _, payload, _ in answers] == list(range(20))
    assert {prefix for prefix, _, _ in answers} == {"hello"}
    assert {pid for _, _, pid in answers} != {os.getpid()}


def test_an_urgent_payload_is_answered_before_the_payloads_waiting_ahead_of_it() -> None:
    async def scenario() -> list[str]:
        worker = await started()
        answered: list[str] = []

        async def send(name: str, payload: str, urgent: bool = False) -> None:
            await worker.run(payload, urgent)
            answered.append(name)

        try:
            slow = [send(f"article {n}", "slow") for n in range(5)]
            await asyncio.gather(*slow, send("listing", "quick", urgent=True))
        finally:
            worker.close()
        return answered

    answered = run(scenario)
    # sent last, in the same write; at most the page already in hand goes first
    assert answered.index("listing") <= 1


def test_a_payload_sent_before_the_worker_is_ready_is_refused_not_queued() -> None:
    async def scenario() -> None:
        worker = PageWorker("tests.worker_handlers:echo", "hello")
        with pytest.raises(WorkerUnavailable):
            await worker.run(1)  # not started
        assert await worker.start()
        try:
            with pytest.raises(WorkerUnavailable):
                await worker.run(2)  # started, still importing
        finally:
            worker.close()

    run(scenario)


def test_a_worker_that_cannot_start_says_so_and_leaves_nothing_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")

    async def scenario() -> PageWorker:
        worker = PageWorker("tests.worker_handlers:echo", "hello")
        assert await worker.start() is False
        with pytest.raises(WorkerUnavailable):
            await worker.run(1)
        return worker

    worker = run(scenario)
    assert worker.stopped
    assert worker._process is None


def test_a_worker_without_room_for_its_error_file_says_so_and_leaves_nothing_open(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    opened: list[socket.socket] = []
    real_socketpair = socket.socketpair

    def socketpair() -> tuple[socket.socket, socket.socket]:
        pair = real_socketpair()
        opened.extend(pair)
        return pair

    def disk_full() -> None:
        raise OSError(28, "No space left on device")

    async def scenario() -> PageWorker:
        worker = PageWorker("tests.worker_handlers:echo", "hello")
        monkeypatch.setattr("scraper.workers.socket.socketpair", socketpair)
        monkeypatch.setattr("scraper.workers.tempfile.TemporaryFile", disk_full)
        with caplog.at_level(logging.WARNING, logger="scraper.workers"):
            assert await worker.start() is False
        monkeypatch.undo()
        with pytest.raises(WorkerUnavailable):
            await worker.run(1)
        return worker

    worker = run(scenario)
    assert worker.stopped and worker._process is None
    assert "No space left on device" in caplog.text
    assert len(opened) == 2 and all(end.fileno() == -1 for end in opened)  # both closed


def test_a_worker_closed_while_it_starts_is_ended_not_left_running() -> None:
    async def scenario() -> tuple[bool, PageWorker]:
        worker = PageWorker("tests.worker_handlers:echo", "hello")
        starting = asyncio.ensure_future(worker.start())
        await asyncio.sleep(0)  # the process is started; the connection is not set up yet
        worker.close()  # the crawl ended first
        return await starting, worker

    began, worker = run(scenario)
    assert began is False
    assert worker.stopped and not worker.ready
    assert worker._process is not None and worker._process.poll() is not None


def test_a_handler_that_raises_fails_that_payload_only() -> None:
    async def scenario() -> tuple[str, Any]:
        worker = await started()
        try:
            with pytest.raises(WorkerUnavailable) as failed:
                await worker.run("fail")
            return str(failed.value), await worker.run("next")
        finally:
            worker.close()

    message, answer = run(scenario)
    assert message == "ValueError: no such page"
    assert answer[1] == "next"


def test_a_dead_worker_fails_what_waits_and_everything_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def scenario() -> None:
        worker = await started()
        waiting = asyncio.ensure_future(worker.run("die"))
        with pytest.raises(WorkerUnavailable):
            await waiting
        with pytest.raises(WorkerUnavailable):
            await worker.run("after")
        assert not worker.ready

    with caplog.at_level(logging.WARNING, logger="scraper.workers"):
        run(scenario)
    # what it wrote to stderr before dying is in the warning
    assert "it said: dying on purpose" in caplog.text


def test_a_worker_that_stops_answering_is_killed_after_the_timeout() -> None:
    async def scenario() -> int | None:
        worker = await started(timeout=0.5)
        process = worker._process
        with pytest.raises(WorkerUnavailable):
            await worker.run("hang")
        assert process is not None
        return process.poll()

    assert run(scenario) is not None  # killed and reaped, not left sleeping


def test_a_factory_that_fails_to_set_up_leaves_the_worker_never_ready() -> None:
    async def scenario() -> PageWorker:
        worker = PageWorker("tests.worker_handlers:broken", None, timeout=20)
        assert await worker.start()
        for _ in range(500):
            if worker._process is not None and worker._process.poll() is not None:
                break
            await asyncio.sleep(0.01)
        return worker

    worker = run(scenario)
    assert not worker.ready
    assert worker._process is not None and worker._process.poll() is not None


def test_close_ends_the_worker_process() -> None:
    async def scenario() -> int | None:
        worker = await started()
        await worker.run(1)
        worker.close()
        assert worker._process is not None
        return worker._process.returncode

    assert run(scenario) == 0  # it left by itself at the end of its input


class _Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.NOTSET)  # like the CLI's handler: the logger's level decides
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def logged_at_warning(scenario: Callable[[], Awaitable[Any]]) -> list[str]:
    """What the parent logs for the worker's "tests.worker" logger, at WARNING, while `scenario`
    runs."""
    kept, target = _Kept(), logging.getLogger("tests.worker")
    target.addHandler(kept)
    target.setLevel(logging.WARNING)
    try:
        run(scenario)
    finally:
        target.removeHandler(kept)
        target.setLevel(logging.NOTSET)
    return kept.messages


def test_the_workers_log_records_are_logged_by_the_parent_at_its_level() -> None:
    async def scenario() -> None:
        worker = await started()
        try:
            await worker.run("log")
        finally:
            worker.close()

    # not the DEBUG line after it
    assert logged_at_warning(scenario) == ["read log in the worker"]


def test_a_page_the_worker_fails_on_leaves_its_log_to_the_parents_own_reading() -> None:
    """The spider reads such a page again in-process, which logs the same warnings once more."""

    async def scenario() -> None:
        worker = await started()
        try:
            with pytest.raises(WorkerUnavailable):
                await worker.run("log, then fail")
            await worker.run("log")
        finally:
            worker.close()

    assert logged_at_warning(scenario) == ["read log in the worker"]


def test_the_worker_reads_pages_without_importing_scrapy_twisted_or_asyncio() -> None:
    url = "http://csto.test/news/news_odkb/x/"
    sources = {
        "csto-en": SourceConfig("csto-en", ("http://csto.test/news/",), "en", CSTO_SELECTORS)
    }
    page = {
        "kind": "article",
        "url": url,
        "body": b"<html><body><div class='news-detail'><h1>Title</h1>"
        b"<div class='news-date-time'>22.04.2024</div>"
        b"<div class='news-detail-text'><p>Text.</p></div></div></body></html>",
        "encoding": "utf-8",
        "source": "csto-en",
        "meta": {"canonical": url},
        "validators": {"etag": None, "last_modified": None},
        "fetched_at": "2024-04-22T00:00:00Z",
    }

    async def scenario() -> list[str]:
        worker = PageWorker("tests.worker_handlers:reading_pages_reports_modules", sources)
        assert await worker.start()
        for _ in range(2000):
            if worker.ready:
                break
            await asyncio.sleep(0.01)
        try:
            return await worker.run(page)
        finally:
            worker.close()

    modules = run(scenario)
    assert "lxml" in modules  # it did read the page
    assert {"scrapy", "twisted", "asyncio"} & set(modules) == set()


# -- in a crawl ------------------------------------------------------------------------------------

STORED_COLUMNS = (
    "source, url, title, published, summary, body, language, section, attachments, content_hash"
)


def crawled(workspace: Workspace, config: str, setting: str) -> tuple[list[dict[str, Any]], str]:
    workspace.path.mkdir(parents=True, exist_ok=True)
    workspace.write_config(config + setting + "\n")
    result = workspace.run("-v", "crawl")
    assert result.returncode == 0, result.stderr
    return stored(workspace), result.stderr


def stored(workspace: Workspace) -> list[dict[str, Any]]:
    return list(workspace.db().query(f"select {STORED_COLUMNS} from articles order by url"))


def crawled_by_the_worker(
    workspace: Workspace, replica: ReplicaServer, config: str, *args: str
) -> tuple[list[dict[str, Any]], str]:
    """A crawl (`crawl ARGS`) whose article pages and listing pages past the first the replica
    holds until the page worker is ready, so the worker reads every one of them however fast or
    slow this machine starts a process."""
    workspace.path.mkdir(parents=True, exist_ok=True)
    workspace.write_config(config + "NEWSMON_PAGE_WORKER_AFTER = 0\n")  # start at the first page
    for section, prefix in ((replica.replica_en, "/news/"), (replica.replica_ru, "/ru/news/")):
        section.faults.add(path=prefix + "news_odkb/", kind="hold")
        section.faults.add(path=prefix + "?PAGEN_1=", kind="hold")
    crawl = workspace.start("-v", "crawl", *args)  # its log read while it runs
    log: list[str] = []
    ready = threading.Event()

    def read_log() -> None:
        assert crawl.stderr is not None
        for line in crawl.stderr:
            log.append(line)
            if "page worker ready" in line:
                ready.set()

    reading = threading.Thread(target=read_log, daemon=True)
    reading.start()
    try:
        assert ready.wait(60), "".join(log)
    finally:
        replica.replica_en.faults.clear()
        replica.replica_ru.faults.clear()
        try:
            crawl.wait(timeout=120)
        finally:
            crawl.kill()
        reading.join(timeout=10)
    assert crawl.returncode == 0, "".join(log)
    return stored(workspace), "".join(log)


def listing_pages_requested(replica: ReplicaServer) -> list[str]:
    requests = replica.replica_en.requests + replica.replica_ru.requests
    return sorted(target for _, target, _ in requests if "?PAGEN_1=" in target)


@pytest.mark.parametrize("selectors", [True, False], ids=["configured", "automatic"])
def test_a_crawl_stores_the_same_articles_whether_the_page_worker_reads_them_or_not(
    replica: ReplicaServer, tmp_path: Path, selectors: bool
) -> None:
    config = replica_config(replica, selectors=selectors)
    alone, _ = crawled(Workspace(tmp_path / "alone"), config, "NEWSMON_PAGE_WORKER = false")
    walked_alone = listing_pages_requested(replica)
    replica.replica_en.reset_requests()
    replica.replica_ru.reset_requests()
    helped, log = crawled_by_the_worker(Workspace(tmp_path / "helped"), replica, config)
    assert len(alone) == 37  # both replica sections, English and Russian (windows-1251)
    assert helped == alone
    # each listing page once, the worker's early requests for the next one included
    assert listing_pages_requested(replica) == walked_alone == sorted(set(walked_alone))
    read = [line for line in log.splitlines() if "page worker read " in line]
    assert len(read) == 1, log
    assert int(read[0].split()[-2]) >= 37, log  # every article page, and listing pages


def test_pages_that_arrive_while_the_worker_starts_are_read_in_the_crawl_by_one_worker(
    replica: ReplicaServer, tmp_path: Path
) -> None:
    config = replica_config(replica)
    alone, _ = crawled(Workspace(tmp_path / "alone"), config, "NEWSMON_PAGE_WORKER = false")
    helped, log = crawled(Workspace(tmp_path / "helped"), config, "NEWSMON_PAGE_WORKER_AFTER = 0")
    assert helped == alone
    started = [line for line in log.splitlines() if "page worker started" in line]
    assert len(started) == 1, log  # though many pages wanted it at once


def test_a_crawl_below_the_threshold_never_starts_the_page_worker(
    replica: ReplicaServer, tmp_path: Path
) -> None:
    rows, log = crawled(
        Workspace(tmp_path), replica_config(replica), "NEWSMON_PAGE_WORKER_AFTER = 100"
    )
    assert len(rows) == 37
    assert "page worker" not in log


def test_a_page_limit_holds_when_the_worker_reads_the_listing_pages(
    replica: ReplicaServer, tmp_path: Path
) -> None:
    config = replica_config(replica)
    rows, _ = crawled_by_the_worker(
        Workspace(tmp_path), replica, config, "--full", "--max-pages", "2"
    )
    assert listing_pages_requested(replica) == ["/news/?PAGEN_1=2", "/ru/news/?PAGEN_1=2"]
    assert len(rows) == 20 + 1 + 12  # two English pages and their pinned item, both Russian ones


# -- the next listing page, before the worker's answer ---------------------------------------------


def a_listing_page(workspace: Workspace, mode: str, max_pages: int | None = None) -> Any:
    """A spider over one configured source, its run, and the source's first listing page."""
    from scrapy.http import HtmlResponse, Request
    from scrapy.utils.test import get_crawler

    from monitor.config import load_config
    from scraper.spiders.news import NewsSpider

    start = "http://csto.test/news/"
    config = load_config(
        workspace.write_config(f'database = "newsmon.db"\n{source_block("s", start)}')
    )
    crawler = get_crawler(NewsSpider)
    spider = NewsSpider.from_crawler(crawler, config=config, mode=mode, max_pages=max_pages)
    run = spider.session.begin(spider.sources[0])
    page = (
        "<html><body><div class='news-item'><a class='news-title' href='/news/a/'>A</a></div>"
        "<a class='modern-page-next' href='/news/?PAGEN_1=2'>Next</a></body></html>"
    )
    request = Request(start, meta={"source": "s", "page": 1})
    return spider, run, HtmlResponse(start, body=page.encode(), request=request)


def test_a_backfill_requests_the_next_listing_page_before_the_worker_reads_the_page(
    workspace: Workspace,
) -> None:
    spider, run, response = a_listing_page(workspace, "crawl")
    assert run.backfill  # a new archive
    request = spider._next_listing_now(run, response)
    assert request is not None
    assert (request.url, request.meta["page"]) == ("http://csto.test/news/?PAGEN_1=2", 2)
    spider.session.close()


def test_an_incremental_crawl_waits_for_the_pages_entries_before_walking_on(
    workspace: Workspace,
) -> None:
    spider, run, response = a_listing_page(workspace, "check")
    run.backfill = False  # caught up once: whether to walk on depends on the page's entries
    assert spider._next_listing_now(run, response) is None
    spider.session.close()


def test_the_page_limit_leaves_the_next_listing_page_to_the_workers_answer(
    workspace: Workspace,
) -> None:
    spider, run, response = a_listing_page(workspace, "full", max_pages=1)
    assert spider._next_listing_now(run, response) is None
    spider.session.close()


def test_a_walk_runs_ahead_of_the_worker_by_one_listing_page_at_most(
    workspace: Workspace,
) -> None:
    spider, run, response = a_listing_page(workspace, "full")
    run.listings_in_worker = 1  # the page before is still being read: it may be a repeat
    assert spider._next_listing_now(run, response) is None
    spider.session.close()
