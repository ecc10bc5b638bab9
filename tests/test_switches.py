"""Scrapy components that their settings turn off are never imported (scraper/switches.py).

A crawl is a real `newsmon crawl` in a subprocess that writes down, as it exits, every module
it imported.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from scrapy.settings import Settings

from monitor.replica import ReplicaServer
from scraper.switches import unlist_switched_off
from tests.conftest import Workspace, replica_config

SWITCHED_OFF_MODULES = {
    "aiohttp",  # RemoteControl's
    "scrapy.extensions.remote_control",
    "tldextract",  # CookiesMiddleware's
    "scrapy.downloadermiddlewares.cookies",
    "scrapy.extensions.telnet",
}


# `newsmon ARGS`, writing the names of the modules it imported to the file its first argument names
CLI_NOTING_MODULES = (
    "import atexit, runpy, sys; out = sys.argv.pop(1); "
    "atexit.register(lambda: open(out, 'w').write('\\n'.join(sys.modules))); "
    "runpy.run_module('monitor', run_name='__main__', alter_sys=True)"
)


def imported_in_a_crawl(workspace: Workspace, config: str) -> tuple[set[str], str]:
    workspace.path.mkdir(parents=True, exist_ok=True)
    workspace.write_config(config)
    noted = workspace.path / "modules.txt"
    command = [sys.executable, "-c", CLI_NOTING_MODULES, str(noted)]
    command += ["--config", str(workspace.config), "-v", "crawl"]
    result = subprocess.run(
        command,
        cwd=workspace.path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert result.returncode == 0, result.stderr
    return set(noted.read_text().split()), result.stderr


def test_a_crawl_never_imports_the_components_its_settings_turn_off(
    replica: ReplicaServer, tmp_path: Path
) -> None:
    modules, log = imported_in_a_crawl(Workspace(tmp_path), replica_config(replica))
    assert "scrapy.core.engine" in modules, log  # it did record the crawl's imports
    assert modules & SWITCHED_OFF_MODULES == set()


def test_a_component_turned_on_by_its_setting_is_imported_and_enabled(
    replica: ReplicaServer, tmp_path: Path
) -> None:
    config = replica_config(replica) + "COOKIES_ENABLED = true\n"
    modules, log = imported_in_a_crawl(Workspace(tmp_path), config)
    assert "scrapy.downloadermiddlewares.cookies" in modules
    enabled = log[log.index("Enabled downloader middlewares") :]
    assert "CookiesMiddleware" in enabled[: enabled.index("]")]


def test_a_component_the_project_lists_itself_stays_listed() -> None:
    settings = Settings()
    settings.set("COOKIES_ENABLED", False)
    path = "scrapy.downloadermiddlewares.cookies.CookiesMiddleware"
    settings.set("DOWNLOADER_MIDDLEWARES", {path: 650}, priority="project")
    unlist_switched_off(settings)
    assert path in settings.getdict("DOWNLOADER_MIDDLEWARES_BASE")


def test_only_the_switched_off_components_leave_scrapys_defaults() -> None:
    settings = Settings()
    before = settings.getdict("EXTENSIONS_BASE")
    settings.set("REMOTE_CONTROL_ENABLED", False)
    settings.set("TELNETCONSOLE_ENABLED", True)
    unlist_switched_off(settings)
    after = settings.getdict("EXTENSIONS_BASE")
    assert set(before) - set(after) == {"scrapy.extensions.remote_control.RemoteControl"}
