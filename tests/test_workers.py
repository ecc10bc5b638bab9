"""The page worker (scraper/workers.py): a real second process on a real socket.

It only ever speeds a crawl up, so every way it can fail must leave the caller a clean
WorkerUnavailable (the spider then reads the page itself), and the crawl's results must not
depend on whether it ran.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from monitor.replica import ReplicaServer
from scraper.workers import PageWorker, WorkerUnavailable
from tests.conftest import Workspace, replica_config

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


def test_the_workers_log_records_are_logged_by_the_parent_at_its_level() -> None:
    async def scenario() -> None:
        worker = await started()
        try:
            await worker.run("log")
        finally:
            worker.close()

    kept, target = _Kept(), logging.getLogger("tests.worker")
    target.addHandler(kept)
    target.setLevel(logging.WARNING)
    try:
        run(scenario)
    finally:
        target.removeHandler(kept)
        target.setLevel(logging.NOTSET)
    assert kept.messages == ["read log in the worker"]  # not the DEBUG line after it


def test_reading_pages_in_the_worker_never_imports_scrapy_or_twisted() -> None:
    code = (
        "import sys, scraper.article, scraper.workers\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'scrapy', 'twisted'}))"
    )
    result = subprocess.run(
        [sys.executable, "-P", "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        check=True,
    )
    assert result.stdout.strip() == "[]"


# -- in a crawl ------------------------------------------------------------------------------------

STORED_COLUMNS = (
    "source, url, title, published, summary, body, language, section, attachments, content_hash"
)


def crawled(workspace: Workspace, config: str, setting: str) -> tuple[list[dict[str, Any]], str]:
    workspace.path.mkdir(parents=True, exist_ok=True)
    workspace.write_config(config + setting + "\n")
    result = workspace.run("-v", "crawl")
    assert result.returncode == 0, result.stderr
    rows = workspace.db().query(f"select {STORED_COLUMNS} from articles order by url")
    return list(rows), result.stderr


@pytest.mark.parametrize("selectors", [True, False], ids=["configured", "automatic"])
def test_a_crawl_stores_the_same_articles_whether_the_page_worker_reads_them_or_not(
    replica: ReplicaServer, tmp_path: Path, selectors: bool
) -> None:
    config = replica_config(replica, selectors=selectors)
    alone, _ = crawled(Workspace(tmp_path / "alone"), config, "NEWSMON_PAGE_WORKER = false")
    helped, log = crawled(Workspace(tmp_path / "helped"), config, "NEWSMON_PAGE_WORKER_AFTER = 0")
    assert len(alone) == 37  # both replica sections, English and Russian (windows-1251)
    assert helped == alone
    read = [line for line in log.splitlines() if "page worker read" in line]
    started = [line for line in log.splitlines() if "page worker started" in line]
    assert len(started) == len(read) == 1, log  # one worker, though many pages wanted it at once
    assert int(read[0].split()[-2]) > 10, log  # the rest were read before it was ready


def test_a_crawl_below_the_threshold_never_starts_the_page_worker(
    replica: ReplicaServer, tmp_path: Path
) -> None:
    rows, log = crawled(
        Workspace(tmp_path), replica_config(replica), "NEWSMON_PAGE_WORKER_AFTER = 100"
    )
    assert len(rows) == 37
    assert "page worker" not in log
