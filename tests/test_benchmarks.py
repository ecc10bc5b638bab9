"""The benchmark keeps working: `python benchmarks/run.py --quick` runs every scenario at a tiny
size and prints every row of its table. Nothing here is about time (figures vary from machine to
machine and run to run); the full run and its targets are in the README, under Performance.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Every row the table must hold: (area starts with, measure starts with).
EXPECTED_ROWS = [
    ("backfill", "wall time, `crawl --full` vs bare spider"),
    ("backfill", "wall time, `crawl --full` / bare spider within each round"),
    ("backfill", "wall time, bare spider that also extracts"),
    ("backfill", "CPU time"),
    ("backfill", "peak memory, PSS"),
    ("backfill", "peak RSS"),
    ("backfill", "requests"),
    ("unchanged tick", "requests"),
    ("unchanged tick", "bytes"),
    ("unchanged tick", "wall time"),
    *[(f"tick, k = {k} new", what) for k in (1, 5, 25) for what in ("requests", "bytes")],
    ("storage", "normalize + upsert"),
    ("storage", "of which: normalize_article"),
    ("storage", "of which: store_articles alone"),
    ("storage", "store_article, one article per transaction"),
    ("search", "median latency"),
    ("search", "p95 latency"),
    ("search", "one word"),
    ("search", "two words"),
    ("search", "phrase"),
    ("search", "every match ranked"),
    ("`watch", "RSS at tick"),
    ("50 sources, unchanged", "requests"),
    ("50 sources, unchanged", "wall time"),
    ("50 sources, unchanged", "peak RSS"),
    ("50 sources, baseline", "wall time"),
]


def test_quick_benchmark_prints_every_row(tmp_path: Path) -> None:
    raw = tmp_path / "bench.json"
    command = [sys.executable, "benchmarks/run.py", "--quick"]
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    result = subprocess.run(
        [*command, "--json", str(raw)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in result.stdout.splitlines()
        if line.startswith("| ") and not line.startswith("| Area ")
    ]
    assert all(len(row) == 7 and row[2] for row in rows), result.stdout
    for area, measure in EXPECTED_ROWS:
        assert any(r[0].startswith(area) and r[1].startswith(measure) for r in rows), (
            f"no row {area!r} / {measure!r} in:\n{result.stdout}"
        )
    assert len(rows) == len(EXPECTED_ROWS), result.stdout
    assert raw.exists()
