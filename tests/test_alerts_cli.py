"""`newsmon alerts [--pending | --failed] [--retry] [--json]`: the outbox as the user sees it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from monitor.replica import Replica, ReplicaServer
from tests.conftest import Workspace
from tests.test_check import (
    WebhookReceiver,
    alert_rows,
    check_ok,
    jsonl_channel,
    site_config,
    webhook_channel,
)

ARTICLES = 3


def tiny_server() -> ReplicaServer:
    return ReplicaServer(Replica(articles=ARTICLES), Replica(articles=1, language="ru"))


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def outbox(tmp_path_factory) -> Iterator[dict[str, Any]]:
    """One check alerting its baseline on three channels: jsonl (sent), `flaky` (a webhook that
    answers 500, still pending) and `dead` (the same webhook with max_attempts = 1, failed)."""
    workspace = Workspace(tmp_path_factory.mktemp("outbox"))
    with tiny_server() as server, WebhookReceiver() as receiver:
        receiver.down = True
        channels = (
            jsonl_channel(workspace.path / "alerts.jsonl", '["new"]')
            + webhook_channel(receiver.url, extra='name = "flaky"\n')
            + webhook_channel(receiver.url, extra='name = "dead"\nmax_attempts = 1\n')
        )
        workspace.write_config(site_config(server, channels))
        check_ok(workspace, "--alert-on-first-run")
        titles = [article.title for article in server.replica_en.articles()]
        yield {"workspace": workspace, "titles": titles}


def test_alerts_lists_every_outbox_row_with_status_event_channel_and_title(outbox):
    result = outbox["workspace"].run("alerts")

    assert result.returncode == 0, result.stderr
    shown = lines(result.stdout)
    assert len(shown) == 3 * ARTICLES
    by_channel = {
        name: [line for line in shown if f" {name} " in line] for name in ("jsonl", "flaky", "dead")
    }
    assert all(len(rows) == ARTICLES for rows in by_channel.values())
    assert all(" sent " in line for line in by_channel["jsonl"])
    assert all(" new " in line for line in shown)
    for title in outbox["titles"]:
        assert sum(title[:60] in line for line in shown) == 3


def test_alerts_pending_shows_only_pending_rows_with_attempts_and_last_error(outbox):
    result = outbox["workspace"].run("alerts", "--pending")

    assert result.returncode == 0, result.stderr
    shown = lines(result.stdout)
    assert len(shown) == ARTICLES
    for line in shown:
        assert " pending " in line and " flaky " in line
        assert "tries=1" in line
        assert "last error:" in line and "500" in line


def test_alerts_failed_shows_only_rows_that_gave_up(outbox):
    result = outbox["workspace"].run("alerts", "--failed")

    assert result.returncode == 0, result.stderr
    shown = lines(result.stdout)
    assert len(shown) == ARTICLES
    assert all(" failed " in line and " dead " in line and "tries=1" in line for line in shown)


def test_alerts_json_prints_one_object_per_outbox_row(outbox):
    result = outbox["workspace"].run("alerts", "--json")

    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in lines(result.stdout)]
    assert len(rows) == 3 * ARTICLES
    assert all(row["channel"] in ("jsonl", "flaky", "dead") for row in rows)
    assert {row["status"] for row in rows} == {"sent", "pending", "failed"}
    assert len({row["alert_id"] for row in rows}) == 3 * ARTICLES


def test_alerts_retry_delivers_pending_and_failed_rows_now_exactly_once(tmp_path):
    workspace = Workspace(tmp_path)
    with tiny_server() as server, WebhookReceiver() as receiver:
        receiver.down = True
        channels = webhook_channel(receiver.url, extra='name = "flaky"\n') + webhook_channel(
            receiver.url, extra='name = "dead"\nmax_attempts = 1\n'
        )
        workspace.write_config(site_config(server, channels))
        check_ok(workspace, "--alert-on-first-run")
        receiver.down = False

        retried = workspace.run("alerts", "--retry")
        again = workspace.run("alerts", "--retry")

        assert retried.returncode == 0, retried.stderr
        expected = f"{2 * ARTICLES} sent, 0 failed to send, 0 still pending"
        assert lines(retried.stdout)[0] == expected
        assert lines(again.stdout)[0] == "0 sent, 0 failed to send, 0 still pending"
        ids = [row["alert_id"] for row in alert_rows(workspace)]
        assert sorted(receiver.accepted_ids()) == sorted(ids)
        assert len(set(ids)) == 2 * ARTICLES
        assert {row["status"] for row in alert_rows(workspace)} == {"sent"}
        for view in ("--pending", "--failed"):
            assert lines(workspace.run("alerts", view).stdout) == []


def test_alerts_retry_while_the_receiver_is_still_down_keeps_rows_and_counts_the_attempt(
    tmp_path,
):
    workspace = Workspace(tmp_path)
    with tiny_server() as server, WebhookReceiver() as receiver:
        receiver.down = True
        workspace.write_config(site_config(server, webhook_channel(receiver.url)))
        check_ok(workspace, "--alert-on-first-run")

        retried = workspace.run("alerts", "--retry")

        assert retried.returncode == 1
        assert lines(retried.stdout)[0].startswith(f"0 sent, {ARTICLES} failed to send")
        rows = alert_rows(workspace)
        assert [(row["status"], row["attempts"]) for row in rows] == [("pending", 2)] * ARTICLES
        assert receiver.accepted_ids() == []


def test_alerts_on_an_empty_outbox_prints_nothing_and_exits_0(tmp_path):
    workspace = Workspace(tmp_path)
    with tiny_server() as server:
        workspace.write_config(site_config(server, jsonl_channel(tmp_path / "a.jsonl")))

        result = workspace.run("alerts")

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_alerts_with_a_bad_channel_config_exits_2_with_one_line(tmp_path):
    workspace = Workspace(tmp_path)
    with tiny_server() as server:
        workspace.write_config(site_config(server, '\n[[alerts]]\ntype = "carrier-pigeon"\n'))

        result = workspace.run("alerts")

    assert result.returncode == 2
    assert len(lines(result.stderr)) == 1
    assert "carrier-pigeon" in result.stderr
