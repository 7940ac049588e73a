"""Cold build of the generated corpus: Letterpress against Pelican, in the same run.

Target (from the issue): a cold build of 1,000 generated articles of about 10 KB each
runs at least 5 times Pelican's articles per second on the same corpus.

Each build is one whole process (start-up included, for both tools) into a fresh,
empty output folder; wall time is measured around the subprocess. Rounds alternate the
tools (in a rotating order) so that noise on the shared machine hits all of them alike;
the figures are medians. Pelican runs from its own venv (bench/.venv-pelican, created
and filled from PyPI on first use); Letterpress runs from the project venv, with
cwd=bench/.work (no letterpress.toml there) and without REDIS_URL or LETTERPRESS_*
variables, i.e. on the embedded defaults.

    .venv/bin/python bench/build_vs_pelican.py [-n 1000] [--rounds 3] [--warmup 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from benchutil import clean_env, code_version
from corpus import generate

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work" / "build"
PELICAN_VENV = BENCH / ".venv-pelican"
LETTERPRESS = ROOT / ".venv" / "bin" / "letterpress"
TARGET_RATIO = 5.0

PELICAN_CONF = """\
# Minimal Pelican settings for the benchmark: Pelican's defaults for what it builds
# (theme, article/category/tag/author/archive pages, Atom feeds), no content cache.
AUTHOR = "Editorial Team"
SITENAME = "Letterpress benchmark"
SITEURL = ""
RELATIVE_URLS = True
TIMEZONE = "UTC"
DEFAULT_LANG = "en"
LOAD_CONTENT_CACHE = False
"""


@dataclass
class Tool:
    name: str
    argv: list[str]  # output folder appended
    env: dict[str, str]
    times: list[float] = field(default_factory=list)
    inner: list[float] = field(default_factory=list)  # the tool's own reported seconds
    pages: int = 0
    summary: str = ""


def ensure_pelican() -> str:
    pelican = PELICAN_VENV / "bin" / "pelican"
    if not pelican.exists():
        print(f"installing Pelican into {PELICAN_VENV} (benchmark only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(PELICAN_VENV)], check=True)
        subprocess.run(
            [str(PELICAN_VENV / "bin" / "pip"), "install", "-q", "pelican", "markdown"],
            check=True,
        )
    version = subprocess.run(
        [
            str(PELICAN_VENV / "bin" / "python"),
            "-c",
            "import importlib.metadata as m; print(m.version('pelican'), m.version('markdown'))",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split()
    return f"Pelican {version[0]} with Markdown {version[1]}"


def run_once(tool: Tool, n: int, out: Path) -> tuple[float, float | None]:
    if out.exists():
        shutil.rmtree(out)
    started = time.perf_counter()
    proc = subprocess.run(
        [*tool.argv, str(out)], cwd=WORK, env=tool.env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"{tool.name} failed (exit {proc.returncode}):\n{output[-3000:]}")
    inner = None
    if tool.name.startswith("pelican"):
        m = re.search(r"Processed (\d+) articles?.*?in ([\d.]+) seconds", output, re.S)
        if not m or int(m.group(1)) != n:
            sys.exit(f"pelican did not process {n} articles:\n{output[-3000:]}")
        inner = float(m.group(2))
        tool.summary = " ".join(m.group(0).split())
    else:
        m = re.search(r"built (\d+) article\(s\).*?in ([\d.]+) s \((\w+)\)", output)
        if not m or int(m.group(1)) != n:
            sys.exit(f"letterpress did not build {n} articles:\n{output[-3000:]}")
        inner = float(m.group(2))
        tool.summary = output.strip().splitlines()[-1]
    tool.pages = sum(1 for p in out.rglob("*") if p.is_file() and ".letterpress" not in p.parts)
    return elapsed, inner


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Cold build: Letterpress vs Pelican.")
    parser.add_argument("-n", type=int, default=1000, help="articles (default 1000)")
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (default 3)")
    parser.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="untimed rounds first: page cache, .pyc files (default 1)",
    )
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)

    pelican_version = ensure_pelican()
    lp_content, pel_content = WORK / "letterpress", WORK / "pelican"
    generate(lp_content, pel_content, args.n, args.seed)
    (WORK / "pelicanconf.py").write_text(PELICAN_CONF, encoding="utf-8")
    if (WORK / "letterpress.toml").exists():
        sys.exit(f"{WORK / 'letterpress.toml'} would change the Letterpress settings")
    size = sum(p.stat().st_size for p in lp_content.glob("*.md"))

    env = clean_env()
    tools = [
        Tool(
            "pelican",
            [str(PELICAN_VENV / "bin" / "pelican"), str(pel_content), "-s", "pelicanconf.py", "-o"],
            env,
        ),
        *[
            Tool(
                f"letterpress --pool {pool}",
                [str(LETTERPRESS), "build", "--content", str(lp_content), "--pool", pool, "--out"],
                env,
            )
            for pool in ("serial", "processes")
        ],
    ]
    print(
        f"corpus: {args.n} articles, {size / args.n / 1000:.1f} KB each on average"
        f" ({WORK.relative_to(ROOT)})"
    )
    print(
        f"tools:  {pelican_version}; letterpress from {LETTERPRESS.relative_to(ROOT)};"
        f" {os.cpu_count()} CPUs"
    )
    print(f"code:   {code_version()}")
    print(f"rounds: {args.warmup} warm-up (untimed) + {args.rounds} timed, order rotating")

    for r in range(args.warmup + args.rounds):
        order = tools[r % len(tools) :] + tools[: r % len(tools)]
        label = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}"
        cells = []
        for tool in order:
            out = WORK / f"out-{tool.name.split()[0]}-{tool.name.split()[-1]}"
            elapsed, inner = run_once(tool, args.n, out)
            if r >= args.warmup:
                tool.times.append(elapsed)
                if inner is not None:
                    tool.inner.append(inner)
            cells.append(f"{tool.name} {elapsed:.2f} s")
        print(f"  {label}: " + ", ".join(cells), flush=True)

    print()
    print(
        f"{'':28}{'median wall':>12}{'min':>8}{'max':>8}{'articles/s':>12}"
        f"{'reported':>10}{'pages':>7}"
    )
    rates: dict[str, float] = {}
    for tool in tools:
        med = statistics.median(tool.times)
        rates[tool.name] = args.n / med
        own = f"{statistics.median(tool.inner):.2f} s" if tool.inner else "-"
        print(
            f"{tool.name:28}{med:>10.2f} s{min(tool.times):>6.2f} s{max(tool.times):>6.2f} s"
            f"{rates[tool.name]:>12.0f}{own:>10}{tool.pages:>7}"
        )
    print("  (reported = the tool's own timing of its build, without interpreter start-up)")
    print()
    base = rates["pelican"]
    best = max((t for t in tools if t.name != "pelican"), key=lambda t: rates[t.name])
    for tool in tools[1:]:
        ratio = rates[tool.name] / base
        print(f"{tool.name:28} {ratio:.2f}x Pelican's articles/s")
    best_ratio = rates[best.name] / base
    verdict = "MET" if best_ratio >= TARGET_RATIO else "NOT MET"
    need = args.n / (base * TARGET_RATIO)
    print(
        f"target >= {TARGET_RATIO:.0f}x Pelican: {verdict} (best: {best.name}, {best_ratio:.2f}x;"
        f" {TARGET_RATIO:.0f}x needs a cold build in <= {need:.2f} s here)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
