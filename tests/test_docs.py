"""The README stays true: its Quick start, its commands and its settings table."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.settings import Settings
from tests.conftest import CONTENT, ROOT

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
    documented = set(re.findall(r"^\| `([a-z0-9_]+)` \|", table, re.M))
    assert documented == set(Settings.model_fields)


def readme_commands() -> list[list[str]]:
    block = re.findall(r"```sh\n(.*?)```", section("Commands"), re.S)[0]
    return [shlex.split(line.split("#")[0])[1:] for line in block.splitlines() if line.strip()]


LONG_RUNNING = {"worker", "metrics", "serve"}


def test_every_command_in_the_readme_runs_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Commands block is one editor's session, run top to bottom in one folder."""
    shutil.copytree(CONTENT, tmp_path / "content")
    shutil.copy(ROOT / "letterpress.toml", tmp_path / "letterpress.toml")
    (tmp_path / "subscribers.csv").write_text(
        "email,name,time_zone\nbea@example.org,Bea,Europe/Paris\nnot-an-address,Bad,UTC\n"
        "cy@example.org,Cy,UTC\n"
    )
    monkeypatch.chdir(tmp_path)
    for name in ("REDIS_URL", "DATABASE_URL", "LETTERPRESS_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LETTERPRESS_SECRET_KEY", "a-secret-for-the-docs-test")
    outputs = []
    for argv in readme_commands():
        if argv[0] in LONG_RUNNING or (argv[0] == "beat" and "--once" not in argv):
            argv = [argv[0], "--help"]
        typed = "a long demo password\n" * 2 if argv[:2] == ["users", "add"] else None
        result = CliRunner().invoke(main, argv, input=typed)  # the password, twice
        expected = 1 if argv[:2] == ["subscribers", "import"] else 0  # one bad row, reported
        assert result.exit_code == expected, (argv, result.output)
        outputs.append(result.output)
    joined = "\n".join(outputs)
    assert "subscribers.csv:3: " in joined
    assert "issue 1 sent: 3 sent, 0 failed" in joined  # Bea, Cy and Ann
    assert "added olive@example.org as owner" in joined
    assert len(list((tmp_path / "outbox" / "issue-1").glob("*.eml"))) == 3


def test_every_command_is_in_the_readme() -> None:
    shown = {argv[0] for argv in readme_commands()}
    assert shown == set(main.commands)  # type: ignore[attr-defined]
