"""Every command is documented: it has help text and the README shows it."""

from pathlib import Path

import pytest

from monitor.cli import cli

README = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
COMMANDS = sorted(cli.commands)


@pytest.mark.parametrize("name", COMMANDS)
def test_command_has_help_text(name):
    assert (cli.commands[name].help or "").strip()


@pytest.mark.parametrize("name", COMMANDS)
def test_command_appears_in_the_readme(name):
    assert f"newsmon {name}" in README


def test_readme_starts_with_the_install_and_test_commands():
    first_block = README.split("```")[1]
    assert "pip install -e '.[dev]'" in first_block
    assert "pytest" in first_block
