"""Cold build of the generated corpus: Letterpress against Pelican, in the same run.

Target: a cold build of 1,000 generated articles of about 10 KB each
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
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from benchutil import clean_env, code_version, median
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
    times: list[float] = field(default_factory=list)  # wall seconds per timed round
    cpu: list[float] = field(default_factory=list)  # user+sys seconds, children included
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


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_once(tool: Tool, n: int, out: Path) -> tuple[float, float, float]:
    """One cold build: (wall seconds, CPU seconds, seconds the tool itself reports)."""
    if out.exists():
        shutil.rmtree(out)
    cpu_before = _cpu()
    started = time.perf_counter()
    proc = subprocess.run(
        [*tool.argv, str(out)], cwd=WORK, env=tool.env, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    cpu = _cpu() - cpu_before
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"{tool.name} failed (exit {proc.returncode}):\n{output[-3000:]}")
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
    return elapsed, cpu, inner


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.1f} (1 min), {five:.1f} (5 min) on {os.cpu_count()} CPUs"


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

    print(f"load:   {_load()} at the start")

    for r in range(args.warmup + args.rounds):
        order = tools[r % len(tools) :] + tools[: r % len(tools)]
        label = "warm-up" if r < args.warmup else f"round {r - args.warmup + 1}"
        cells = []
        for tool in order:
            out = WORK / f"out-{tool.name.split()[0]}-{tool.name.split()[-1]}"
            elapsed, cpu, inner = run_once(tool, args.n, out)
            if r >= args.warmup:
                tool.times.append(elapsed)
                tool.cpu.append(cpu)
                tool.inner.append(inner)
            cells.append(f"{tool.name} {elapsed:.2f} s")
        print(f"  {label}: " + ", ".join(cells), flush=True)
    print(f"load:   {_load()} at the end")
    print()
    for tool in tools:
        print(f"  {tool.name}: {tool.summary}")
    print()

    pelican, others = tools[0], tools[1:]
    header = ("median wall", "min", "max", "articles/s", "CPU s", "own s", "files")
    print(f"{'':28}" + "".join(f"{h:>12}" for h in header))
    for tool in tools:
        cells = [
            f"{median(tool.times):.2f} s",
            f"{min(tool.times):.2f} s",
            f"{max(tool.times):.2f} s",
            f"{args.n / median(tool.times):.0f}",
            f"{median(tool.cpu):.2f} s",
            f"{median(tool.inner):.2f} s",
            str(tool.pages),
        ]
        print(f"{tool.name:28}" + "".join(f"{c:>12}" for c in cells))
    print("  CPU s = user+sys of the process and its workers; own s = the build time the tool")
    print("  prints itself (no interpreter start-up); files = files written to the output folder")
    print()
    print("Letterpress articles/s as a multiple of Pelican's (higher is better):")
    print(f"{'':28}{'medians':>12}{'per round':>12}{'CPU time':>12}")
    best_name, best_ratio = "", 0.0
    for tool in others:
        ratio = median(pelican.times) / median(tool.times)
        paired = median([p / t for p, t in zip(pelican.times, tool.times, strict=True)])
        cpu_ratio = median(pelican.cpu) / median(tool.cpu)
        print(f"{tool.name:28}{ratio:>11.2f}x{paired:>11.2f}x{cpu_ratio:>11.2f}x")
        if ratio > best_ratio:
            best_name, best_ratio = tool.name, ratio
    print("  medians: median wall of each; per round: median of the ratios within each round")
    print("  (same moment, same load); CPU time: less sensitive to load, blind to parallelism")
    verdict = "MET" if best_ratio >= TARGET_RATIO else "NOT MET"
    need = median(pelican.times) / TARGET_RATIO
    print()
    print(
        f"target >= {TARGET_RATIO:.0f}x Pelican's articles/s: {verdict} (best: {best_name},"
        f" {best_ratio:.2f}x; {TARGET_RATIO:.0f}x needs a cold build in <= {need:.2f} s here)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
