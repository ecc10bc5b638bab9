"""The SQLite archive on a real file: upserts, revisions, FTS, transactions, schema versions."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlite_utils

from storage.archive import Archive
from storage.migrations import MIGRATIONS, SchemaTooNewError
from storage.normalize import content_hash

URL = "https://en.odkb-csto.org/news/news_odkb/consultations-were-held-1/"


def article(
    url: str = URL,
    title: str = "Consultations were held in Moscow",
    body: str = "On 22 April 2024, consultations were held.\n\nThe parties agreed on next steps.",
    **extra: Any,
) -> dict[str, Any]:
    """A normalized article as the pipeline hands it to the archive."""
    return {
        "source": "csto-en",
        "url": url,
        "title": title,
        "published": "2024-04-22",
        "summary": "Consultations were held.",
        "body": body,
        "language": "en",
        "section": "news_odkb",
        "attachments": [],
        "content_hash": content_hash(title, body),
        **extra,
    }


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "news.db"


@pytest.fixture
def archive(db_path: Path) -> Iterator[Archive]:
    with Archive(db_path) as opened:
        yield opened


def count(archive: Archive, table: str) -> int:
    return archive.db.execute(f"select count(*) from {table}").fetchone()[0]


def fts_ids(archive: Archive, query: str) -> list[int]:
    sql = (
        "select a.id from articles_fts f join articles a on a.search_order = f.rowid"
        " where articles_fts match ? order by a.id"
    )
    return [row[0] for row in archive.db.execute(sql, [query]).fetchall()]


# -- store_article outcomes ------------------------------------------------------------------------


def test_an_unseen_url_is_stored_as_new(archive):
    assert archive.store_article(article()) == "new"
    row = archive.get_article(URL)
    assert row["title"] == "Consultations were held in Moscow"
    assert row["published"] == "2024-04-22"
    assert row["section"] == "news_odkb"


def test_the_same_content_again_is_unchanged(archive):
    archive.store_article(article())
    assert archive.store_article(article()) == "unchanged"


def test_changed_content_is_updated_in_place(archive):
    archive.store_article(article(), now="2024-04-22T10:00:00+00:00")
    first = archive.get_article(URL)
    edited = article(title="Consultations were held in Minsk")
    assert archive.store_article(edited, now="2024-04-23T10:00:00+00:00") == "updated"
    row = archive.get_article(URL)
    assert row["title"] == "Consultations were held in Minsk"
    assert row["content_hash"] == edited["content_hash"]
    assert row["id"] == first["id"]
    assert row["first_seen"] == "2024-04-22T10:00:00+00:00"
    assert row["last_seen"] == "2024-04-23T10:00:00+00:00"
    assert count(archive, "articles") == 1


def test_timestamps_are_iso_8601_utc(archive):
    archive.store_article(article())
    row = archive.get_article(URL)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", row["first_seen"])


def test_attachments_are_stored_as_a_json_list(archive):
    pdf = "https://en.odkb-csto.org/upload/statement.pdf"
    archive.store_article(article(attachments=[pdf]))
    assert json.loads(archive.get_article(URL)["attachments"]) == [pdf]


def test_each_distinct_content_hash_is_one_revision(archive):
    original, edited = article(), article(body="A corrected text.")
    archive.store_article(original)
    archive.store_article(original)
    archive.store_article(edited)
    archive.store_article(edited)
    archive.store_article(original)  # edited back: a version already recorded
    article_id = archive.get_article(URL)["id"]
    hashes = [row["content_hash"] for row in archive.revisions(article_id)]
    assert hashes == [original["content_hash"], edited["content_hash"]]


def test_a_revision_keeps_the_title_and_body_of_its_version(archive):
    archive.store_article(article())
    archive.store_article(article(body="A corrected text."))
    revisions = archive.revisions(archive.get_article(URL)["id"])
    assert [r["body"] for r in revisions] == [article()["body"], "A corrected text."]


def test_storing_the_same_articles_twice_changes_no_counts(archive):
    batch = [article(url=f"{URL}?n={n}", title=f"Item {n}") for n in range(5)]
    for item in batch:
        archive.store_article(item)
    before = {table: count(archive, table) for table in ("articles", "revisions", "articles_fts")}
    outcomes = [archive.store_article(item) for item in batch]
    after = {table: count(archive, table) for table in ("articles", "revisions", "articles_fts")}
    assert outcomes == ["unchanged"] * 5
    assert after == before == {"articles": 5, "revisions": 5, "articles_fts": 5}


# -- full-text search ------------------------------------------------------------------------------


def test_full_text_search_finds_a_stored_word(archive):
    archive.store_article(article(body="Peacekeeping exercises began."))
    assert fts_ids(archive, "peacekeeping") == [archive.get_article(URL)["id"]]


def test_full_text_search_finds_russian_words_case_insensitively(archive):
    archive.store_article(article(title="Консультации прошли в Москве", body="Текст."))
    assert fts_ids(archive, "консультации") == [archive.get_article(URL)["id"]]


def test_full_text_search_follows_an_update(archive):
    archive.store_article(article(body="Peacekeeping exercises began."))
    archive.store_article(article(body="Counter-terrorism exercises began."))
    assert fts_ids(archive, "peacekeeping") == []
    assert fts_ids(archive, "terrorism") == [archive.get_article(URL)["id"]]


# -- transactions ----------------------------------------------------------------------------------


def test_on_change_sees_the_stored_row_inside_the_transaction(archive):
    seen = []

    def hook(outcome: str, row: dict[str, Any]) -> None:
        stored = archive.get_article(row["id"])
        seen.append((outcome, stored["url"]))

    archive.store_article(article(), on_change=hook)
    archive.store_article(article(), on_change=hook)  # unchanged: no call
    archive.store_article(article(body="Edited."), on_change=hook)
    assert seen == [("new", URL), ("updated", URL)]


def test_an_error_in_on_change_leaves_nothing_behind(archive):
    def hook(outcome: str, row: dict[str, Any]) -> None:
        archive.db["alerts"].insert({"alert_id": "x", "event": outcome, "article_id": row["id"]})
        raise RuntimeError("outbox failed")

    with pytest.raises(RuntimeError, match="outbox failed"):
        archive.store_article(article(body="Peacekeeping exercises began."), on_change=hook)
    assert count(archive, "articles") == 0
    assert count(archive, "revisions") == 0
    assert count(archive, "alerts") == 0
    assert fts_ids(archive, "peacekeeping") == []


def test_an_error_in_on_change_keeps_the_previous_version(archive):
    archive.store_article(article())

    def hook(outcome: str, row: dict[str, Any]) -> None:
        raise RuntimeError("outbox failed")

    with pytest.raises(RuntimeError):
        archive.store_article(article(title="Edited title"), on_change=hook)
    assert archive.get_article(URL)["title"] == article()["title"]
    assert len(archive.revisions(archive.get_article(URL)["id"])) == 1


# -- batches ---------------------------------------------------------------------------------------


def other(n: int, body: str | None = None, **extra: Any) -> dict[str, Any]:
    return article(url=f"{URL}?n={n}", title=f"Article {n}", body=body or f"Body {n}.", **extra)


def test_a_batch_returns_each_articles_outcome_in_order(archive):
    archive.store_article(other(1))
    outcomes = archive.store_articles([other(0), other(1), other(1, body="Edited."), other(2)])
    assert outcomes == ["new", "unchanged", "updated", "new"]
    assert count(archive, "articles") == 3
    assert count(archive, "revisions") == 4


def test_a_url_twice_in_one_batch_is_stored_once_then_updated(archive):
    outcomes = archive.store_articles(
        [other(1), other(1, body="Edited."), other(1, body="Edited.")]
    )
    assert outcomes == ["new", "updated", "unchanged"]
    assert archive.get_article(f"{URL}?n=1")["body"] == "Edited."


def test_new_articles_in_a_batch_get_their_own_ids_revisions_and_alerts(archive):
    seen = []
    archive.store_articles(
        [other(n, alias=f"{URL}?alias={n}") for n in range(5)],
        on_change=lambda outcome, row: seen.append((outcome, row["id"], row["url"])),
    )
    for outcome, article_id, url in seen:
        stored = archive.get_article(article_id)
        assert (outcome, stored["url"]) == ("new", url)
        assert [r["title"] for r in archive.revisions(article_id)] == [stored["title"]]
    assert len({article_id for _, article_id, _ in seen}) == 5
    assert archive.known_urls([f"{URL}?alias={n}" for n in range(5)]) == {
        f"{URL}?alias={n}" for n in range(5)
    }


def test_a_batch_dates_each_article_by_its_own_fetch_time(archive):
    times = ["2024-04-22T10:00:00+00:00", "2024-04-22T11:00:00+00:00"]
    archive.store_articles([other(n, fetched_at=times[n]) for n in range(2)])
    assert [archive.get_article(f"{URL}?n={n}")["first_seen"] for n in range(2)] == times


def test_an_error_in_on_change_leaves_nothing_of_the_batch_behind(archive):
    def hook(outcome: str, row: dict[str, Any]) -> None:
        if row["url"].endswith("n=3"):
            raise RuntimeError("outbox failed")

    with pytest.raises(RuntimeError):
        archive.store_articles([other(n) for n in range(5)], on_change=hook)
    assert count(archive, "articles") == 0
    assert count(archive, "revisions") == 0
    assert fts_ids(archive, "body") == []


def test_new_articles_take_the_ids_after_the_highest_stored_one(archive):
    archive.store_articles([other(n) for n in range(3)])
    archive.db.execute("delete from articles where id = 2")  # a gap below the highest id stays
    seen = []
    archive.store_articles(
        [other(n) for n in range(3, 6)],
        on_change=lambda outcome, row: seen.append(row["id"]),
    )
    assert seen == [4, 5, 6]
    assert [archive.get_article(i)["url"] for i in seen] == [f"{URL}?n={n}" for n in range(3, 6)]
    assert [archive.revisions(i)[0]["article_id"] for i in seen] == seen


def _temporary_files_open() -> int:
    """SQLite's temporary files open in this process (unlinked as soon as they are created)."""
    fds = Path("/proc/self/fd")
    return sum("etilqs_" in os.readlink(fd) for fd in fds.iterdir() if fd.is_symlink())


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="reads /proc")
@pytest.mark.parametrize("in_memory", [False, True], ids=["default", "temp_in_memory"])
def test_a_crawls_archive_stores_a_batch_without_a_temporary_file(db_path, in_memory):
    batch = [
        article(f"{URL}{i}/", f"Title {i}", " ".join(f"word{i}x{j}" for j in range(300)))
        for i in range(250)
    ]
    open_during_batch: list[int] = []
    with Archive(db_path, temp_in_memory=in_memory) as opened:
        opened.store_articles(
            batch, on_change=lambda *_: open_during_batch.append(_temporary_files_open())
        )
    # Without the setting SQLite journals the batch's statements in a file (the case it fixes).
    assert max(open_during_batch) == (0 if in_memory else 1)


# -- the file --------------------------------------------------------------------------------------


def test_the_database_is_in_wal_mode(archive, db_path):
    archive.store_article(article())
    with sqlite3.connect(db_path) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_a_new_database_file_is_readable_by_its_owner_only(tmp_path):
    previous = os.umask(0o022)
    try:
        with Archive(tmp_path / "fresh.db"):
            pass
    finally:
        os.umask(previous)
    assert (tmp_path / "fresh.db").stat().st_mode & 0o777 == 0o600


def test_a_database_in_a_missing_folder_is_created(tmp_path):
    with Archive(tmp_path / "a" / "b" / "news.db") as opened:
        opened.store_article(article())
    assert (tmp_path / "a" / "b" / "news.db").exists()


# -- schema versions -------------------------------------------------------------------------------


def make_version_1_database(path: Path) -> None:
    """A database as the first newsmon release left it: core tables only, user_version 1."""
    db = sqlite_utils.Database(path)
    MIGRATIONS[0](db)
    db.execute("PRAGMA user_version = 1")
    record = {k: v for k, v in article().items() if k != "attachments"}
    record.update(attachments="[]", first_seen="2024-04-22T10:00:00+00:00")
    db["articles"].insert(record)
    db.conn.commit()
    db.close()


def test_opening_a_version_1_database_migrates_it_to_the_current_version(db_path):
    make_version_1_database(db_path)
    with Archive(db_path) as opened:
        version = opened.db.execute("PRAGMA user_version").fetchone()[0]
        tables = set(opened.db.table_names())
    assert version == len(MIGRATIONS)
    assert {"articles", "revisions", "crawl_runs", "http_validators", "alerts"} <= tables


def test_the_search_key_index_carries_the_dates_that_break_ranking_ties(db_path):
    make_version_1_database(db_path)
    with Archive(db_path) as opened:
        info = opened.db.execute("pragma index_info(idx_articles_search_order)").fetchall()
        indexes = opened.db.execute("pragma index_list(articles)").fetchall()
    assert [row[2] for row in info] == ["search_order", "published", "first_seen"]
    assert "idx_articles_search_order" in [row[1] for row in indexes if row[2]]  # unique


def test_a_migrated_database_keeps_its_articles(db_path):
    make_version_1_database(db_path)
    with Archive(db_path) as opened:
        row = opened.get_article(URL)
        assert row["title"] == article()["title"]
        assert fts_ids(opened, "consultations") == [row["id"]]
        assert opened.store_article(article()) == "unchanged"


def test_a_migrated_database_records_crawl_runs(db_path):
    make_version_1_database(db_path)
    with Archive(db_path) as opened:
        opened.finish_run(opened.start_run("csto-en", "crawl"), "ok", {"new": 1})
        assert opened.has_baseline("csto-en")


def test_two_processes_opening_an_old_database_at_once_migrate_it_once(db_path):
    make_version_1_database(db_path)
    first = sqlite_utils.Database(sqlite3.connect(db_path, timeout=10))
    first.enable_wal()  # as every archive newsmon made
    first.conn.execute("BEGIN IMMEDIATE")  # the first opener is mid-migration, holding the lock
    for step in MIGRATIONS[1:]:
        step(first)
    first.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    seen: list[tuple[int, list[int], int]] = []

    def open_second() -> None:
        with Archive(db_path) as archive:  # reads version 1, then waits for the lock
            version = archive.db.execute("PRAGMA user_version").fetchone()[0]
            seen.append(
                (version, fts_ids(archive, "consultations"), archive.get_article(URL)["id"])
            )

    second = threading.Thread(target=open_second)
    second.start()
    time.sleep(0.3)
    first.conn.commit()
    second.join(timeout=15)
    first.close()
    assert seen, "the second opener failed"
    version, found, article_id = seen[0]
    assert version == len(MIGRATIONS) and found == [article_id]


def test_a_database_from_a_newer_newsmon_is_refused(db_path):
    db = sqlite_utils.Database(db_path)
    db.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    db.close()
    with pytest.raises(SchemaTooNewError):
        Archive(db_path)


def test_reopening_a_current_database_keeps_its_version_and_data(db_path):
    with Archive(db_path) as opened:
        opened.store_article(article())
    with Archive(db_path) as reopened:
        assert reopened.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        assert reopened.count_articles() == 1


# -- revisits --------------------------------------------------------------------------------------

NOW = datetime(2024, 4, 22, 12, 0, tzinfo=UTC)

REVISIT_CASES = [
    # published, last checked, revisit_days, revisit_every (s), due?
    pytest.param("2024-04-21", "2024-04-22T00:00:00+00:00", 3, 6 * 3600, True, id="recent-stale"),
    pytest.param("2024-04-21", "2024-04-22T11:00:00+00:00", 3, 6 * 3600, False, id="recent-fresh"),
    pytest.param("2024-04-01", "2024-04-02T00:00:00+00:00", 3, 6 * 3600, False, id="too-old"),
    pytest.param("2024-04-01", "2024-04-02T00:00:00+00:00", 30, 6 * 3600, True, id="long-window"),
    pytest.param("2024-04-21", "2024-04-22T11:00:00+00:00", 3, 1800, True, id="short-interval"),
    pytest.param(None, "2024-04-22T00:00:00+00:00", 3, 6 * 3600, True, id="undated-first-seen"),
    pytest.param(None, "2024-04-01T00:00:00+00:00", 3, 6 * 3600, False, id="undated-seen-long-ago"),
]


@pytest.mark.parametrize(("published", "checked", "days", "every", "due"), REVISIT_CASES)
def test_due_for_revisit_honours_revisit_days_and_revisit_every(
    archive, published, checked, days, every, due
):
    archive.store_article(article(published=published), now=checked)
    found = archive.due_for_revisit("csto-en", revisit_days=days, revisit_every=every, now=NOW)
    assert [row["url"] for row in found] == ([URL] if due else [])


def test_due_for_revisit_skips_removed_articles_and_other_sources(archive):
    stale = "2024-04-22T00:00:00+00:00"
    archive.store_article(article(), now=stale)
    archive.store_article(article(url=URL + "?other", source="csto-ru"), now=stale)
    archive.mark_removed(archive.get_article(URL)["id"], now=stale)
    assert archive.due_for_revisit("csto-en", revisit_days=3, revisit_every=3600, now=NOW) == []


# -- crawl run history -----------------------------------------------------------------------------


def record_runs(archive: Archive, *statuses: str) -> None:
    for status in statuses:
        run_id = archive.start_run("csto-en", "crawl")
        if status != "running":
            archive.finish_run(run_id, status, {"pages": 1})


def test_a_source_never_crawled_has_no_baseline(archive):
    assert not archive.has_baseline("csto-en")


def test_failed_and_unfinished_runs_are_no_baseline(archive):
    record_runs(archive, "failed", "empty", "running")
    assert not archive.has_baseline("csto-en")


def test_one_successful_run_is_a_baseline(archive):
    record_runs(archive, "failed", "ok", "failed")
    assert archive.has_baseline("csto-en")
    assert not archive.has_baseline("csto-ru")


@pytest.mark.parametrize(
    ("statuses", "failures"),
    [
        pytest.param((), 0, id="never-run"),
        pytest.param(("ok",), 0, id="last-ok"),
        pytest.param(("failed", "failed"), 2, id="failed-from-start"),
        pytest.param(("failed", "ok", "failed", "empty"), 2, id="since-last-ok"),
        pytest.param(("ok", "failed", "running"), 1, id="running-ignored"),
    ],
)
def test_consecutive_failures_counts_runs_since_the_last_success(archive, statuses, failures):
    record_runs(archive, *statuses)
    assert archive.consecutive_failures("csto-en") == failures


def test_finish_run_records_status_and_counts(archive):
    run_id = archive.start_run("csto-en", "crawl")
    archive.finish_run(run_id, "ok", {"pages": 3, "new": 25, "errors": 0})
    run = archive.last_run("csto-en")
    assert (run["status"], run["pages"], run["new"], run["updated"]) == ("ok", 3, 25, 0)
    assert run["finished_at"] is not None


def test_a_listing_alias_of_a_stored_article_counts_as_known(tmp_path):
    archive = Archive(tmp_path / "alias.db")
    article = {
        "source": "s",
        "url": "https://site.example/news/story-1/",
        "title": "Story",
        "body": "Text",
        "content_hash": "h1",
        "alias": "https://site.example/view.php?id=1",
    }
    archive.store_article(article)
    known = archive.known_urls(["https://site.example/view.php?id=1", "https://site.example/x/"])
    assert known == {"https://site.example/view.php?id=1"}
    archive.close()


# -- checkpoints -----------------------------------------------------------------------------------


def _main_file_urls(db_path: Path, copy: Path) -> list[str]:
    """What the database file holds without its WAL: what a checkpoint has copied into it."""
    copy.write_bytes(db_path.read_bytes())
    with sqlite3.connect(copy) as main_only:
        return [row[0] for row in main_only.execute("select url from articles order by id")]


def _checkpoint_threads(db_path: Path) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"checkpoint {db_path.absolute()}"]


def test_a_commit_reaches_the_database_file_without_waiting_for_a_full_wal(db_path, tmp_path):
    with Archive(db_path) as archive:
        archive.store_articles([other(n) for n in range(3)])
        deadline = time.monotonic() + 10
        while archive._checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _main_file_urls(db_path, tmp_path / "copy.db") == [f"{URL}?n={n}" for n in range(3)]


def test_the_writer_checkpoints_by_itself_only_as_a_backstop_while_the_thread_runs(archive):
    archive.store_article(article())
    assert archive.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 10_000


def test_closing_the_archive_stops_its_checkpoint_thread(db_path):
    archive = Archive(db_path)
    archive.store_article(article())
    assert len(_checkpoint_threads(db_path)) == 1
    archive.close()
    assert _checkpoint_threads(db_path) == []


def test_an_archive_that_only_reads_starts_no_thread(archive, db_path):
    archive.count_articles()
    assert _checkpoint_threads(db_path) == []


def test_without_a_checkpoint_thread_the_writer_checkpoints_by_itself(db_path, monkeypatch):
    def refuse(self: threading.Thread) -> None:
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(threading.Thread, "start", refuse)
    archive = Archive(db_path)
    assert archive.store_articles([other(0)]) == ["new"]
    assert archive.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 1_000
    archive.close()
    with Archive(db_path) as reopened:
        assert reopened.count_articles() == 1


def test_a_database_moved_away_while_open_is_not_replaced_by_an_empty_one(db_path, tmp_path):
    archive = Archive(db_path)
    moved = tmp_path / "moved.db"
    db_path.rename(moved)  # a mistaken move while a crawl runs: its WAL stays at the old path
    archive.store_articles([other(0)])
    archive.close()
    assert not db_path.exists()  # no empty database took over the WAL
    moved.rename(db_path)  # moved back, the database finds its WAL again
    with Archive(db_path) as found:
        assert [row["url"] for row in found.iter_articles()] == [f"{URL}?n=0"]
