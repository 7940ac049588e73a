"""The ``letterpress`` command imports what the command it runs uses, and no more:
``--help`` lists every command without importing one, and ``build``, ``check`` and
``preview`` never import the SQL, Celery or web code of the other commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest

from pipeline.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parent.parent

# Runs the real entry point (workers.edge:main, as the console script does), then
# writes the top-level packages that were imported to the file named by argv[1].
RUNNER = """
import json, sys
out, sys.argv = sys.argv[1], ["letterpress", *sys.argv[2:]]
from workers.edge import main
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
with open(out, "w") as f:
    json.dump({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}, f)
"""

SERVER_SIDE = {"sqlalchemy", "celery", "kombu", "fastapi", "starlette", "uvicorn", "alembic",
               "psycopg", "redis", "prometheus_client"}  # fmt: skip


def imported(tmp_path: Path, *args: str, **env: str) -> set[str]:
    """The packages ``letterpress ARGS`` imports, run in a process of its own."""
    out = tmp_path / "modules.json"
    clean = {k: v for k, v in os.environ.items()
             if k != "REDIS_URL" and not k.startswith("LETTERPRESS_")}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", RUNNER, str(out), *args],
        cwd=tmp_path,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.exists(), done.stderr
    found = json.loads(out.read_text())
    assert found["code"] in (0, None), (args, done.stdout, done.stderr)
    return set(found["modules"])


def test_help_imports_no_command(tmp_path: Path) -> None:
    modules = imported(tmp_path, "--help")
    assert not modules & (SERVER_SIDE | {"pydantic", "pydantic_settings", "jinja2", "yaml"})
    assert "click" in modules


def test_build_help_imports_nothing_a_build_does_not_use(tmp_path: Path) -> None:
    modules = imported(tmp_path, "build", "--help")
    assert not modules & (SERVER_SIDE | {"premailer", "cmarkgfm", "jinja2"})


def test_check_build_and_preview_import_no_sql_celery_or_web_code(tmp_path: Path) -> None:
    content = str(ROOT / "content")
    check = imported(tmp_path, "check", "--content", content)
    assert not check & (SERVER_SIDE | {"premailer", "jinja2"})

    build = imported(
        tmp_path, "build", "--content", content, "--out", str(tmp_path / "site"), "--pool", "auto"
    )
    assert (tmp_path / "site" / "index.html").is_file()
    assert not build & (SERVER_SIDE | {"premailer"})

    preview = imported(
        tmp_path,
        "preview",
        "vitamin-k2-for-directing-calcium-to-bones",
        "--content",
        content,
        "--out",
        str(tmp_path / "email"),
        LETTERPRESS_POSTAL_ADDRESS="1 Example Street, Springfield",
    )
    assert (tmp_path / "email" / "message.eml").is_file()
    assert not preview & SERVER_SIDE
    assert "premailer" in preview  # it does render an email


def test_a_command_that_needs_sql_still_gets_it(tmp_path: Path) -> None:
    """The lazy loading is real: the modules are there when a command needs them."""
    modules = imported(
        tmp_path, "db", "upgrade", LETTERPRESS_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}"
    )
    assert {"sqlalchemy", "alembic"} <= modules
    assert "celery" not in modules  # no REDIS_URL: nothing to ask the workers


def test_help_lists_every_command_with_its_own_help() -> None:
    ctx = click.Context(main)
    listed = main.list_commands(ctx)
    assert listed == sorted(COMMANDS)
    for name in listed:
        command = main.get_command(ctx, name)
        assert isinstance(command, click.Command), name
        assert command.name == name
        assert COMMANDS[name].short_help == command.get_short_help_str(10**6), name


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_answers_help(tmp_path: Path, name: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workers", name, "--help"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"Usage: letterpress {name}" in done.stdout


def test_an_unknown_command_is_refused_with_the_list() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "workers", "biuld"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "No such command 'biuld'" in done.stderr
