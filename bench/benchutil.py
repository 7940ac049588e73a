"""Small helpers shared by the benchmark scripts."""

from __future__ import annotations

import os
import statistics
import subprocess
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


def clean_env() -> dict[str, str]:
    """The environment without REDIS_URL or LETTERPRESS_*: Letterpress's embedded defaults."""
    env = {
        k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("LETTERPRESS_")
    }
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # let every tool use its .pyc files
    return env


def code_version() -> str:
    """The commit measured, and whether the working tree differs from it."""

    def git(*args: str) -> str:
        proc = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return proc.stdout.rstrip("\n")  # keep the leading blank of porcelain lines

    head = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    changed = [
        line[3:]
        for line in git("status", "--porcelain", "--", "pipeline", "templates").splitlines()
    ]
    if not changed:
        return f"letterpress at {head} (clean)"
    return f"letterpress at {head} + uncommitted changes in {', '.join(sorted(changed))}"


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: list[float]) -> float:
    return statistics.median(values)
