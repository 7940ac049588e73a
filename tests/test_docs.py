"""The README stays true: its Quick start, its commands and its settings table."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli import main
from pipeline.settings import Settings

from .conftest import CONTENT, ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", README, re.M | re.S)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_quick_start_is_one_shell_block_of_exactly_two_commands() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", section("Quick start"), re.S)
    assert len(blocks) == 1
    commands = [line for line in blocks[0].splitlines() if line.strip()]
    assert commands == ["scripts/demo", "scripts/test"]
    for command in commands:
        assert (ROOT / command).stat().st_mode & 0o111, f"{command} is not executable"


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text()
    assert "README.md" in ci and "Quick start" in ci


def test_every_setting_is_documented() -> None:
    table = section("Settings")
    documented = set(re.findall(r"^\| `([a-z_]+)` \|", table, re.M))
    assert documented == set(Settings.model_fields)


def readme_commands() -> list[list[str]]:
    block = re.findall(r"```sh\n(.*?)```", section("Commands"), re.S)[0]
    return [shlex.split(line.split("#")[0])[1:] for line in block.splitlines() if line.strip()]


@pytest.mark.parametrize("argv", readme_commands(), ids=lambda argv: argv[0])
def test_every_command_in_the_readme_runs(
    argv: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copytree(CONTENT, tmp_path / "content")
    shutil.copy(ROOT / "letterpress.toml", tmp_path / "letterpress.toml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REDIS_URL", raising=False)
    if argv[0] == "worker":  # long-running: its own test starts one for real
        argv = ["worker", "--help"]
    result = CliRunner().invoke(main, argv)
    assert result.exit_code == 0, result.output


def test_every_command_is_in_the_readme() -> None:
    shown = {argv[0] for argv in readme_commands()}
    assert shown == set(main.commands)  # type: ignore[attr-defined]
