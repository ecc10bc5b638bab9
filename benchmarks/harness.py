"""Helpers for benchmarks/run.py: measured child processes, a metered replica, configs, stats."""

from __future__ import annotations

import math
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from monitor.config import CSTO_SELECTORS as CSTO_PROFILE  # noqa: E402
from monitor.replica import Replica, ReplicaServer  # noqa: E402

BARE_SPIDER = Path(__file__).resolve().parent / "bare_spider.py"

CSTO_SELECTORS = "\n" + CSTO_PROFILE.as_toml()


def log(message: str) -> None:
    """Progress goes to stderr; stdout carries only the table."""
    print(message, file=sys.stderr, flush=True)


# -- child processes -------------------------------------------------------------------------------


@dataclass
class Measured:
    """One child process: wall time (s), peak memory (MB), CPU time, exit code, output.

    `peak_mb` is the largest RSS of the child or any process it waited for (wait4's figure);
    `peak_tree_mb` the largest sum of PSS over the child and its descendants, sampled every
    SAMPLE_SECONDS: what a command costs in memory when it runs more than one process (newsmon's
    page worker), shared pages counted once.
    """

    command: list[str]
    wall: float
    peak_mb: float
    cpu: float  # user + system seconds, the processes it waited for included
    returncode: int
    stdout: str
    stderr: str
    peak_tree_mb: float = 0.0

    def check(self, allowed: Iterable[int] = (0,)) -> Measured:
        if self.returncode not in tuple(allowed):
            tail = "\n".join(self.stderr.splitlines()[-30:])
            raise RuntimeError(
                f"{' '.join(self.command[:6])}... exited {self.returncode}\n{tail}\n{self.stdout}"
            )
        return self


def child_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH")
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO) + (os.pathsep + path if path else ""),
        "PYTHONWARNINGS": "ignore",
    }
    # Installed packages come byte-compiled, and Python caches a checkout's own modules on first
    # import. With PYTHONDONTWRITEBYTECODE set (some CI images set it) newsmon's modules alone
    # would be compiled from source on every run, about 60 ms that no user pays.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def compile_sources() -> None:
    """Byte-compile newsmon's packages up front, so the first measured run does not pay for it."""
    packages = [str(REPO / name) for name in ("monitor", "scraper", "storage", "benchmarks")]
    command = [sys.executable, "-m", "compileall", "-q", *packages]
    subprocess.run(command, env=child_env(), check=False, stdout=subprocess.DEVNULL)


def run_measured(command: Sequence[str], cwd: Path, timeout: float = 1800) -> Measured:
    """Run a child to the end; its peak RSS comes from wait4's rusage (that child alone)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(command), cwd=cwd, env=child_env(), stdout=out, stderr=err)
        done: dict[str, Any] = {}

        def reap() -> None:
            _, status, usage = os.wait4(proc.pid, 0)
            done.update(status=status, usage=usage, ended=time.perf_counter())

        reaper = threading.Thread(target=reap, daemon=True)
        reaper.start()
        peak_tree = _sample_tree_pss(proc.pid, reaper, timeout)
        reaper.join(timeout)
        if reaper.is_alive():
            proc.kill()
            reaper.join()
        proc.returncode = os.waitstatus_to_exitcode(done["status"])  # Popen must not wait again
        out.seek(0)
        err.seek(0)
        return Measured(
            list(command),
            done["ended"] - started,
            done["usage"].ru_maxrss * 1024 / 1e6,  # ru_maxrss is KiB on Linux; MB here
            done["usage"].ru_utime + done["usage"].ru_stime,
            proc.returncode,
            out.read().decode("utf-8", "replace"),
            err.read().decode("utf-8", "replace"),
            peak_tree,
        )


SAMPLE_SECONDS = 0.05


def _sample_tree_pss(pid: int, running: threading.Thread, timeout: float) -> float:
    """The largest PSS sum (MB) of `pid` and its descendants while `running` is alive."""
    if not os.path.exists(f"/proc/{pid}/task/{pid}/children"):  # CONFIG_PROC_CHILDREN unset
        log("warning: no /proc/PID/task/TID/children here: peak PSS counts the main process only")
    peak, deadline = 0.0, time.monotonic() + timeout
    while running.is_alive() and time.monotonic() < deadline:
        peak = max(peak, sum(_pss_mb(member) for member in _process_tree(pid)))
        running.join(SAMPLE_SECONDS)
    return peak


def _process_tree(pid: int) -> list[int]:
    members, queue = [], [pid]
    while queue:
        member = queue.pop()
        members.append(member)
        try:
            for task in os.listdir(f"/proc/{member}/task"):
                with open(f"/proc/{member}/task/{task}/children", encoding="ascii") as children:
                    queue.extend(int(child) for child in children.read().split())
        except OSError:  # gone meanwhile
            continue
    return members


def _pss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/smaps_rollup", encoding="ascii") as rollup:
            for line in rollup:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024 / 1e6
    except OSError:  # gone meanwhile, or a kernel without smaps_rollup (before 4.14)
        pass
    return 0.0


def newsmon(config: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "monitor", "--config", str(config), *args]


def bare_spider(*args: str) -> list[str]:
    return [sys.executable, "-m", "scrapy", "runspider", str(BARE_SPIDER), *args]


def scrapy_flags(settings: dict[str, Any]) -> list[str]:
    flags: list[str] = []
    for name, value in settings.items():
        flags += ["-s", f"{name}={value}"]
    return flags


def vm_rss_mb(pid: int) -> float:
    """Resident memory of a running process now, from /proc/PID/status."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmRSS for {pid}")


def stop(proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    """SIGTERM (newsmon's graceful stop) the child we started, SIGKILL if it hangs."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- a replica that counts bytes -------------------------------------------------------------------


class MeteredReplica:
    """A started ReplicaServer, its traffic counted from the last reset: the requests each
    replica logged (method, target, status) and the bytes the server sent (status lines, headers,
    bodies)."""

    def __init__(self, server: ReplicaServer) -> None:
        self.server = server.start()
        self._bytes_before = server.bytes_sent

    def replicas(self) -> list[Replica]:
        server = self.server
        with server._lock:
            sections = list(server._sections.values())
        return [server.replica_en, server.replica_ru, *sections]

    def reset(self) -> None:
        for rep in self.replicas():
            rep.reset_requests()
        self._bytes_before = self.server.bytes_sent

    @property
    def bytes_sent(self) -> int:
        return self.server.bytes_sent - self._bytes_before

    def traffic(self) -> Traffic:
        log = [entry for rep in self.replicas() for entry in rep.requests]
        return Traffic(log, self.bytes_sent)

    def stop(self) -> None:
        self.server.stop()


@dataclass
class Traffic:
    log: list[tuple[str, str, int]] = field(default_factory=list)
    bytes: int = 0

    @property
    def requests(self) -> int:
        return len(self.log)

    def count(self, status: int) -> int:
        return sum(1 for _, _, code in self.log if code == status)


# -- configs ---------------------------------------------------------------------------------------


def source_block(name: str, url: str) -> str:
    return (
        f'\n[[sources]]\nname = "{name}"\nstart_urls = ["{url}"]\nlanguage = "en"\n'
        + CSTO_SELECTORS
    )


def write_config(folder: Path, sources: list[tuple[str, str]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    text = 'database = "newsmon.db"\n' + "".join(source_block(n, u) for n, u in sources)
    path = folder / "newsmon.toml"
    path.write_text(text, encoding="utf-8")
    return path


# -- statistics and the table ----------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Row:
    area: str
    measure: str
    figure: str
    baseline: str = "—"
    ratio: str = "—"
    target: str = "—"
    ok: bool | None = None  # None: information only, no target

    @property
    def result(self) -> str:
        return "" if self.ok is None else ("PASS" if self.ok else "MISS")


def render(rows: list[Row]) -> str:
    header = ("Area", "Measure", "Figure", "Baseline", "Ratio", "Target", "Result")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = (r.area, r.measure, r.figure, r.baseline, r.ratio, r.target, r.result)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine() -> str:
    model = "unknown CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            for line in info:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    version = sys.version.split()[0]
    cpus = len(os.sched_getaffinity(0))
    return f"nproc {cpus}, {model}, Python {version} on {sys.platform}"
