"""`newsmon demo`: offline, under a minute, a new-item alert and an archive left to browse."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path

from monitor.demo import DEMO_TITLE


def test_demo_shows_a_new_item_alert_and_leaves_an_archive_with_the_articles(tmp_path):
    # TMPDIR keeps the demo's temporary folder (and its archive) inside this test's folder.
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "TMPDIR": str(tmp_path)}
    result = subprocess.run(
        [sys.executable, "-m", "monitor", "demo"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert "[new] csto-en" in result.stdout
    alert = next(line for line in result.stdout.splitlines() if "[new] csto-en" in line)
    assert DEMO_TITLE in alert
    found = re.search(r"archive is at (\S+?)\.? Try", result.stdout)
    assert found, result.stdout
    archive = Path(found[1])
    assert archive.is_file() and tmp_path in archive.parents
    with closing(sqlite3.connect(archive)) as conn:
        count = conn.execute("select count(*) from articles").fetchone()[0]
        titles = {row[0] for row in conn.execute("select title from articles")}
    assert count == 24 + 12 + 1  # the demo replica's English and Russian articles, plus the new one
    assert DEMO_TITLE in titles
