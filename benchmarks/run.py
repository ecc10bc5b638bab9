"""newsmon's benchmark: one command, one table, every figure a ratio against a baseline.

    python benchmarks/run.py                  # the full run (N = 2,000 articles; about 6 minutes)
    python benchmarks/run.py --quick          # tiny sizes, one repeat: checks that it still runs
    python benchmarks/run.py --only backfill,ticks --articles 500

It starts the bundled replica on 127.0.0.1 (in this process), runs newsmon and a bare Scrapy
spider (benchmarks/bare_spider.py) as child processes against it, and prints a markdown table.
Machines are shared and noisy, so each figure is measured next to its baseline in the same run,
alternating the two, and the median of the repeats is reported. Politeness is off for every
crawl (`-s DOWNLOAD_DELAY=0 -s AUTOTHROTTLE_ENABLED=False`, higher per-domain concurrency):
the replica is one local host, and per-domain politeness would measure only the delay.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness import (
    MeteredReplica,
    Row,
    bare_spider,
    child_env,
    compile_sources,
    log,
    machine,
    median,
    newsmon,
    percentile,
    render,
    run_measured,
    scrapy_flags,
    stop,
    vm_rss_mb,
    write_config,
)

from monitor.replica import Replica, ReplicaServer

POLITENESS_OFF = {"DOWNLOAD_DELAY": 0, "AUTOTHROTTLE_ENABLED": False}
BACKFILL_SETTINGS = {
    **POLITENESS_OFF,
    "CONCURRENT_REQUESTS": 32,
    "CONCURRENT_REQUESTS_PER_DOMAIN": 16,
}
MANY_SETTINGS = {**POLITENESS_OFF, "CONCURRENT_REQUESTS": 64, "CONCURRENT_REQUESTS_PER_DOMAIN": 64}
SCENARIOS = ("backfill", "ticks", "storage", "search", "watch", "sources")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, help="replica articles for backfill (2000)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat (CI)")
    parser.add_argument("--repeats", type=int, help="alternated runs per comparison (5)")
    parser.add_argument("--per-page", type=int, default=10, help="replica listing page size")
    parser.add_argument("--storage-rows", type=int, help="rows for the storage path (1000)")
    parser.add_argument("--search-articles", type=int, help="stored articles for search (100000)")
    parser.add_argument("--watch-ticks", help="ticks at which watch RSS is read: A,B (10,200)")
    parser.add_argument("--sections", type=int, help="sources for the many-sources check (1000)")
    parser.add_argument("--only", help=f"comma-separated subset of {','.join(SCENARIOS)}")
    parser.add_argument("--json", dest="json_path", help="also write every raw figure here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    quick = args.quick
    defaults = {
        "articles": 60 if quick else 2000,
        "repeats": 1 if quick else 5,
        "storage_rows": 60 if quick else 1000,
        "search_articles": 3000 if quick else 100_000,
        "watch_ticks": "5,20" if quick else "10,200",
        "sections": 50 if quick else 1000,
    }
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.tick_a, args.tick_b = (int(x) for x in args.watch_ticks.split(","))
    args.only = tuple(args.only.split(",")) if args.only else SCENARIOS
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def fmt(value: float, unit: str = "", digits: int = 2) -> str:
    return f"{value:,.{digits}f}{(' ' + unit) if unit else ''}"


def ratio(figure: float, baseline: float) -> str:
    return f"{figure / baseline:.2f}x" if baseline else "—"


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.rows: list[Row] = []
        self.raw: dict[str, Any] = {"machine": machine(), "args": vars(args)}
        self.server: MeteredReplica | None = None
        self.baseline_config: Path | None = None  # an archive with a complete crawl (for ticks)

    # -- shared replica ----------------------------------------------------------------------

    def replica(self) -> MeteredReplica:
        if self.server is None:
            site = Replica(articles=self.args.articles, per_page=self.args.per_page)
            self.server = MeteredReplica(ReplicaServer(site, Replica(articles=3, language="ru")))
            log(f"replica: {self.args.articles} articles at {self.server.server.en_url}")
        return self.server

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()

    def add(self, *args: Any, **kwargs: Any) -> None:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        log(f"  {row.area} | {row.measure}: {row.figure} (baseline {row.baseline}) {row.result}")

    # -- backfill ----------------------------------------------------------------------------

    def backfill(self) -> None:
        server, n = self.replica(), self.args.articles
        url = server.server.en_url
        flags = scrapy_flags(BACKFILL_SETTINGS)
        bare_dir = self.work / "bare"
        bare_dir.mkdir(exist_ok=True)
        runs: dict[str, list[Any]] = {"bare": [], "extracting": [], "newsmon": []}

        def run_bare(kind: str = "bare") -> None:
            server.reset()
            extract = "1" if kind == "extracting" else "0"
            command = bare_spider("-a", f"start_url={url}", "-a", f"extract={extract}", *flags)
            m = run_measured(command, bare_dir).check()
            runs[kind].append((m, server.traffic()))
            log(f"  {kind} bare spider: {m.wall:.2f} s, {m.peak_tree_mb:.0f} MB PSS")

        def run_newsmon(i: int) -> None:
            folder = self.work / f"backfill-{i}"
            config = write_config(folder, [("bench", url)])
            server.reset()
            m = run_measured(newsmon(config, "crawl", "--full", "--json", *flags), folder).check()
            stored = _count(folder / "newsmon.db", "select count(*) from articles")
            if stored != n:
                raise RuntimeError(f"backfill stored {stored} articles, expected {n}")
            runs["newsmon"].append((m, server.traffic()))
            self.baseline_config = config
            log(f"  newsmon crawl --full: {m.wall:.2f} s, {m.peak_tree_mb:.0f} MB PSS")

        log(f"backfill: {n} articles, {self.args.repeats} alternated runs each")
        for i in range(self.args.repeats):
            # newsmon next to the bare spider in every round, first and second by turns: the
            # machine's speed drifts, and the two runs of a round see the same stretch of it.
            order = (run_bare, lambda i=i: run_newsmon(i), lambda: run_bare("extracting"))
            for step in order if i % 2 == 0 else reversed(order):
                step()
        wall = {k: median([m.wall for m, _ in v]) for k, v in runs.items()}
        peak = {k: median([m.peak_mb for m, _ in v]) for k, v in runs.items()}
        tree = {k: median([m.peak_tree_mb for m, _ in v]) for k, v in runs.items()}
        cpu = {k: median([m.cpu for m, _ in v]) for k, v in runs.items()}
        reqs = {k: median([t.requests for _, t in v]) for k, v in runs.items()}
        area = f"backfill, {n:,} articles"
        self.add(
            area,
            "wall time, `crawl --full` vs bare spider",
            fmt(wall["newsmon"], "s"),
            fmt(wall["bare"], "s"),
            ratio(wall["newsmon"], wall["bare"]),
            "≤ 1.2x",
            wall["newsmon"] <= 1.2 * wall["bare"],
        )
        rounds = sorted(
            ours.wall / bare.wall
            for (ours, _), (bare, _) in zip(runs["newsmon"], runs["bare"], strict=True)
        )
        self.add(
            area,
            "wall time, `crawl --full` / bare spider within each round (adjacent runs): range",
            f"{rounds[0]:.2f}x–{rounds[-1]:.2f}x",
            ratio=f"{median(rounds):.2f}x",
        )
        self.add(
            area,
            "wall time, bare spider that also extracts each article's fields vs bare spider",
            fmt(wall["extracting"], "s"),
            fmt(wall["bare"], "s"),
            ratio(wall["extracting"], wall["bare"]),
        )
        self.add(
            area,
            "CPU time (user + system; less noisy than wall)",
            fmt(cpu["newsmon"], "s"),
            fmt(cpu["bare"], "s"),
            ratio(cpu["newsmon"], cpu["bare"]),
        )
        self.add(
            area,
            "peak memory, PSS of the process and its children (newsmon's page worker)",
            fmt(tree["newsmon"], "MB", 0),
            fmt(tree["bare"], "MB", 0),
            ratio(tree["newsmon"], tree["bare"]),
            "≤ 1.5x",
            tree["newsmon"] <= 1.5 * tree["bare"],
        )
        self.add(
            area,
            "peak RSS of the largest process",
            fmt(peak["newsmon"], "MB", 0),
            fmt(peak["bare"], "MB", 0),
            ratio(peak["newsmon"], peak["bare"]),
        )
        self.add(
            area,
            "requests (same pages walked)",
            fmt(reqs["newsmon"], digits=0),
            fmt(reqs["bare"], digits=0),
            ratio(reqs["newsmon"], reqs["bare"]),
            "= 1.00x",
            reqs["newsmon"] == reqs["bare"],
        )
        self.raw["backfill"] = {
            k: [
                {
                    "wall": m.wall,
                    "cpu": m.cpu,
                    "peak_mb": m.peak_mb,
                    "peak_tree_mb": m.peak_tree_mb,
                    "requests": t.requests,
                }
                for m, t in v
            ]
            for k, v in runs.items()
        }

    # -- ticks -------------------------------------------------------------------------------

    def _baseline_archive(self) -> Path:
        """A config whose archive holds a complete crawl of the replica (the backfill's)."""
        if self.baseline_config is None:
            server = self.replica()
            folder = self.work / "ticks"
            config = write_config(folder, [("bench", server.server.en_url)])
            log("baseline crawl for the ticks")
            flags = scrapy_flags(BACKFILL_SETTINGS)
            run_measured(newsmon(config, "crawl", "--json", *flags), folder).check()
            self.baseline_config = config
        return self.baseline_config

    def ticks(self) -> None:
        server, per_page = self.replica(), self.args.per_page
        config = self._baseline_archive()
        folder = config.parent
        url = server.server.en_url
        flags = scrapy_flags(POLITENESS_OFF)
        bare_dir = self.work / "bare"
        bare_dir.mkdir(exist_ok=True)
        log("ticks: unchanged, then k = 1, 5, 25 new articles")
        self.raw["ticks"] = {}

        # Unchanged: one conditional request answered 304, against a plain GET of the same page.
        checks, bares, traffic = [], [], None
        for i in range(self.args.repeats):
            order = ["check", "bare"] if i % 2 == 0 else ["bare", "check"]
            for what in order:
                server.reset()
                if what == "check":
                    checks.append(self._check(config, folder, flags))
                    traffic = server.traffic()
                else:
                    command = bare_spider("-a", f"start_url={url}", "-a", "follow=0", *flags)
                    bares.append(run_measured(command, bare_dir).check())
        assert traffic is not None
        plain = self._plain_bytes([url])
        area = "unchanged tick (`check`)"
        statuses = ", ".join(f"{t} {s}" for _, t, s in traffic.log) or "none"
        self.add(
            area,
            f"requests ({statuses})",
            str(traffic.requests),
            "1 start URL",
            ratio(traffic.requests, 1),
            "1 per start URL, 304",
            traffic.requests == 1 and traffic.count(304) == 1,
        )
        self.add(
            area,
            "bytes received vs a plain GET of page 1",
            fmt(traffic.bytes, "B", 0),
            fmt(plain, "B", 0),
            ratio(traffic.bytes, plain),
        )
        wall_check = median([m.wall for m, _ in checks])
        wall_bare = median([m.wall for m in bares])
        self.add(
            area,
            "wall time vs bare spider fetching page 1",
            fmt(wall_check, "s"),
            fmt(wall_bare, "s"),
            ratio(wall_check, wall_bare),
        )
        self.raw["ticks"]["unchanged"] = {
            "requests": traffic.requests,
            "log": traffic.log,
            "bytes": traffic.bytes,
            "plain_bytes": plain,
            "walls": [m.wall for m, _ in checks],
            "bare_walls": [m.wall for m in bares],
        }

        rep = server.server.replica_en
        for k in (1, 5, 25):
            published = [rep.publish() for _ in range(k)]
            server.reset()
            _, report = self._check(config, folder, flags)
            traffic = server.traffic()
            pages = math.ceil(k / per_page) + 1
            ideal = k + pages
            listing = [url] + [f"{url}?PAGEN_1={p}" for p in range(2, pages + 1)]
            articles = [f"{url}news_odkb/{a.slug}/" for a in published]
            plain = self._plain_bytes(listing + articles)
            area = f"tick, k = {k} new"
            self.add(
                area,
                f"requests ({report['new']} new stored)",
                str(traffic.requests),
                f"{ideal} (k + ⌈k/{per_page}⌉ + 1)",
                ratio(traffic.requests, ideal),
                f"≤ {ideal}",
                traffic.requests <= ideal and report["new"] == k,
            )
            self.add(
                area,
                "bytes received vs plain GETs of those pages",
                fmt(traffic.bytes, "B", 0),
                fmt(plain, "B", 0),
                ratio(traffic.bytes, plain),
            )
            self.raw["ticks"][f"k={k}"] = {
                "requests": traffic.requests,
                "log": traffic.log,
                "bytes": traffic.bytes,
                "plain_bytes": plain,
                "new": report["new"],
            }

    def _check(self, config: Path, folder: Path, flags: list[str]) -> tuple[Any, dict[str, Any]]:
        m = run_measured(newsmon(config, "check", "--json", *flags), folder).check()
        return m, json.loads(m.stdout)

    def _plain_bytes(self, urls: list[str]) -> int:
        """Bytes the replica sends for unconditional GETs of these URLs (what anchors pay)."""
        server = self.replica()
        server.reset()
        for url in urls:
            with urllib.request.urlopen(url, timeout=30) as response:
                response.read()
        total = server.bytes_sent
        server.reset()
        return total

    # -- storage -----------------------------------------------------------------------------

    def storage(self) -> None:
        from storage_bench import BATCH, StorageBench

        rows = self.args.storage_rows
        log(f"storage: {rows} articles rendered by the replica, normalize + upsert vs raw")
        bench = StorageBench(rows, self.work / "storage")
        rates: dict[str, list[float]] = {
            "path": [],
            "raw": [],
            "store": [],
            "single": [],
            "normalize": [],
        }
        bench.warm_up()
        for i in range(self.args.repeats):
            order = list(rates)
            for what in order if i % 2 == 0 else reversed(order):
                rates[what].append(bench.run(what, i))
        rate = {k: median(v) for k, v in rates.items()}
        area = f"storage, {rows:,} articles"
        self.add(
            area,
            "normalize + upsert (rows/s) vs raw executemany",
            fmt(rate["path"], "rows/s", 0),
            fmt(rate["raw"], "rows/s", 0),
            ratio(rate["path"], rate["raw"]),
            "≥ 0.5x",
            rate["path"] >= 0.5 * rate["raw"],
        )
        self.add(
            area,
            "of which: normalize_article alone",
            fmt(rate["normalize"], "rows/s", 0),
            fmt(rate["raw"], "rows/s", 0),
            ratio(rate["normalize"], rate["raw"]),
        )
        self.add(
            area,
            f"of which: store_articles alone, {BATCH} per transaction",
            fmt(rate["store"], "rows/s", 0),
            fmt(rate["raw"], "rows/s", 0),
            ratio(rate["store"], rate["raw"]),
        )
        self.add(
            area,
            "store_article, one article per transaction (not the crawl's path)",
            fmt(rate["single"], "rows/s", 0),
            fmt(rate["raw"], "rows/s", 0),
            ratio(rate["single"], rate["raw"]),
        )
        self.raw["storage"] = rates

    # -- search ------------------------------------------------------------------------------

    def search(self) -> None:
        from search_bench import QUERIES, SearchBench

        from storage.search import RANK_WINDOW

        n = self.args.search_articles
        bench = SearchBench(n, self.work / "search" / "newsmon.db")
        log(f"search: generating {n:,} articles")
        built = bench.build()
        log(f"  stored {n:,} articles with FTS in {built:.1f} s")
        result = bench.measure(rounds=3 if self.args.quick else 15)
        ranked, plain, every = result["ranked"], result["unranked"], result["exhaustive"]
        area = f"search, {n:,} articles"
        p50, p95 = median(ranked), percentile(ranked, 95)
        b50, b95 = median(plain), percentile(plain, 95)
        self.add(
            area,
            f"median latency (storage.search, LIMIT 20, newest {RANK_WINDOW:,} matches ranked)"
            " vs unranked MATCH",
            fmt(p50, "ms"),
            fmt(b50, "ms"),
            ratio(p50, b50),
        )
        self.add(
            area,
            "p95 latency",
            fmt(p95, "ms"),
            fmt(b95, "ms"),
            ratio(p95, b95),
            "< 50 ms",
            p95 < 50,
        )
        for kind, times in result["kinds"].items():
            counts = [result["matches"][q] for q in QUERIES[kind]]
            self.add(
                area,
                f"{kind} ({min(counts):,}–{max(counts):,} matches): median / p95",
                f"{median(times):.1f} / {percentile(times, 95):.1f} ms",
            )
        self.add(
            area,
            "every match ranked (`--rank-all`): median / p95",
            f"{median(every):.1f} / {percentile(every, 95):.1f} ms",
        )
        self.raw["search"] = result | {"build_seconds": built}

    # -- watch -------------------------------------------------------------------------------

    def watch(self) -> None:
        a, b = self.args.tick_a, self.args.tick_b
        config = self._baseline_archive()
        folder = config.parent
        database = folder / "newsmon.db"
        self.replica()
        count_sql = (
            "select count(*) from crawl_runs where kind = 'check' and finished_at is not null"
        )
        before = _count(database, count_sql)
        log(f"watch: --every 1s, RSS at tick {a} and tick {b} (about {b} s)")
        command = newsmon(config, "watch", "--every", "1s", *scrapy_flags(POLITENESS_OFF))
        readings: dict[int, float] = {}
        samples: list[tuple[int, float]] = []
        with open(folder / "watch.log", "wb") as output:
            proc = subprocess.Popen(
                command, cwd=folder, env=child_env(), stdout=output, stderr=subprocess.STDOUT
            )
            try:
                deadline = time.monotonic() + 3 * b + 60
                while len(readings) < 2:
                    if proc.poll() is not None:
                        raise RuntimeError(f"watch exited {proc.returncode}; see {output.name}")
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"watch did not reach tick {b} in time")
                    ticks = _count(database, count_sql) - before
                    if ticks >= 1 and (not samples or samples[-1][0] != ticks):
                        samples.append((ticks, vm_rss_mb(proc.pid)))
                    for mark in (a, b):
                        if ticks >= mark and mark not in readings:
                            readings[mark] = vm_rss_mb(proc.pid)
                    time.sleep(0.1)
            finally:
                stop(proc)
        growth = readings[b] / readings[a] - 1
        self.add(
            f"`watch --every 1s`, {b} ticks",
            f"RSS at tick {b} vs tick {a}",
            fmt(readings[b], "MB", 1),
            fmt(readings[a], "MB", 1),
            f"{growth:+.1%}",
            "growth < 10%",
            growth < 0.10,
        )
        self.raw["watch"] = {"readings": readings, "samples": samples}

    # -- many sources ------------------------------------------------------------------------

    def sources(self) -> None:
        n = self.args.sections
        site = ReplicaServer(
            Replica(articles=3), Replica(articles=3, language="ru"), extra_sections=n
        )
        server = MeteredReplica(site)
        try:
            self._sources(server, n)
        finally:
            server.stop()

    def _sources(self, server: MeteredReplica, n: int) -> None:
        base = server.server.base_url
        urls = [f"{base}/s/{k}/news/" for k in range(n)]
        folder = self.work / "sources"
        config = write_config(folder, [(f"s{k}", url) for k, url in enumerate(urls)])
        urls_file = folder / "urls.txt"
        urls_file.write_text("\n".join(urls) + "\n", encoding="utf-8")
        flags = scrapy_flags(MANY_SETTINGS)
        concurrency = MANY_SETTINGS["CONCURRENT_REQUESTS_PER_DOMAIN"]
        log(f"many sources: {n} sections, baseline check then unchanged checks")
        server.reset()
        first, _ = self._check(config, folder, flags)
        first_traffic = server.traffic()
        checks, bares = [], []
        for i in range(self.args.repeats):
            order = ["check", "bare"] if i % 2 == 0 else ["bare", "check"]
            for what in order:
                server.reset()
                if what == "check":
                    m, report = self._check(config, folder, flags)
                    checks.append((m, server.traffic(), report))
                else:
                    command = bare_spider("-a", f"urls_file={urls_file}", "-a", "follow=0", *flags)
                    bares.append(run_measured(command, folder).check())
        wall = median([m.wall for m, _, _ in checks])
        peak = median([m.peak_mb for m, _, _ in checks])
        bare_wall = median([m.wall for m in bares])
        bare_peak = median([m.peak_mb for m in bares])
        traffic = checks[-1][1]
        area = f"{n:,} sources, unchanged `check`"
        note = f"concurrency {concurrency}, no delay"
        self.add(
            area,
            f"requests ({traffic.count(304)} answered 304)",
            str(traffic.requests),
            f"{n} sources",
            ratio(traffic.requests, n),
            "1 per source",
            traffic.requests == n and traffic.count(304) == n,
        )
        self.add(
            area,
            f"wall time vs bare spider GET of each URL ({note})",
            fmt(wall, "s"),
            fmt(bare_wall, "s"),
            ratio(wall, bare_wall),
            "≤ 30 s",
            wall <= 30,
        )
        self.add(
            area,
            "peak RSS vs bare spider",
            fmt(peak, "MB", 0),
            fmt(bare_peak, "MB", 0),
            ratio(peak, bare_peak),
            "≤ 300 MB",
            peak <= 300,
        )
        self.add(
            f"{n:,} sources, baseline `check`",
            "wall time / requests / peak RSS",
            f"{first.wall:.1f} s / {first_traffic.requests} / {first.peak_mb:.0f} MB",
        )
        self.raw["sources"] = {
            "baseline": {
                "wall": first.wall,
                "peak_mb": first.peak_mb,
                "requests": first_traffic.requests,
            },
            "checks": [
                {"wall": m.wall, "peak_mb": m.peak_mb, "requests": t.requests} for m, t, _ in checks
            ],
            "bare": [{"wall": m.wall, "peak_mb": m.peak_mb} for m in bares],
        }


def _count(database: Path, sql: str) -> int:
    conn = sqlite3.connect(database, timeout=30)
    try:
        return conn.execute(sql).fetchone()[0]
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="newsmon-bench-"))
    bench = Bench(args, work)
    started = time.monotonic()
    compile_sources()
    steps: dict[str, Callable[[], None]] = {name: getattr(bench, name) for name in SCENARIOS}
    try:
        for name in SCENARIOS:
            if name in args.only:
                steps[name]()
    finally:
        bench.close()
        if args.keep:
            log(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    elapsed = time.monotonic() - started
    print(f"newsmon benchmark — {machine()}; {elapsed:.0f} s")
    print()
    print(render(bench.rows))
    if args.json_path:
        bench.raw["rows"] = [vars(r) | {"result": r.result} for r in bench.rows]
        Path(args.json_path).write_text(json.dumps(bench.raw, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
