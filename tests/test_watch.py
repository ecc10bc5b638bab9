"""`newsmon watch`: a long-lived process running checks on a schedule, stopped by SIGTERM."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
from contextlib import closing
from pathlib import Path

import pytest

from monitor.replica import Replica, ReplicaServer
from tests.conftest import wait_for
from tests.test_check import integrity, jsonl_channel, read_jsonl, site_config


def finished_ticks(database: Path) -> int:
    """Finished check runs of csto-en (one per tick), read without creating the file."""
    if not database.exists():
        return 0
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=5)) as conn:
            sql = "select count(*) from crawl_runs where source = ? and finished_at is not null"
            return conn.execute(sql, ["csto-en"]).fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not there yet
        return 0


def test_watch_alerts_once_for_an_article_published_while_it_runs_and_stops_on_sigterm(
    workspace,
):
    alerts_file = workspace.path / "alerts.jsonl"
    with ReplicaServer(Replica(articles=5), Replica(articles=1, language="ru")) as server:
        workspace.write_config(site_config(server, jsonl_channel(alerts_file, '["new"]')))
        watcher = workspace.start(
            "watch", "--every", "2s", "--source", "csto-en", stdout=subprocess.PIPE
        )
        try:
            wait_for(lambda: finished_ticks(workspace.database) >= 1, 30, "the baseline tick")
            assert read_jsonl(alerts_file) == []
            article = server.replica_en.publish(title="Talks on countering terrorism in Minsk")

            wait_for(lambda: read_jsonl(alerts_file) != [], 20, "the alert for the new article")
            seen = finished_ticks(workspace.database)
            wait_for(lambda: finished_ticks(workspace.database) >= seen + 2, 20, "two more ticks")

            lines = read_jsonl(alerts_file)
            assert [(line["event"], line["title"]) for line in lines] == [("new", article.title)]
            assert watcher.poll() is None, "watch must keep running between ticks"

            watcher.send_signal(signal.SIGTERM)
            code = watcher.wait(timeout=10)
        finally:
            if watcher.poll() is None:
                watcher.kill()
            out, err = watcher.communicate()

    assert code == 0, err[-3000:]
    assert integrity(workspace.database) == "ok"


@pytest.mark.parametrize(
    "schedule",
    [("--every", "0s"), ("--every", "banana"), ("--cron", "61 * * * *")],
    ids=["every-0s", "every-banana", "cron-minute-61"],
)
def test_watch_with_an_unusable_schedule_exits_2_with_one_line(workspace, schedule):
    with ReplicaServer(Replica(articles=1), Replica(articles=1, language="ru")) as server:
        workspace.write_config(site_config(server))

        result = workspace.run("watch", *schedule, timeout=30)

    assert result.returncode == 2
    assert len([line for line in result.stderr.splitlines() if line.strip()]) == 1
    assert result.stdout == ""
