"""Incremental rebuild after editing one article of a 1,000-article site.

Target: a rebuild after editing one article of that site takes under
0.4 s, and `letterpress --help` under 0.2 s (measured here too).

The corpus is generated into bench/.work/rebuild/content and cold-built once with the
CLI. Then, for each round, one article gets one more sentence at the end of its body
and the site is rebuilt, alternately

* with the CLI (``letterpress build``, a subprocess: wall time, start-up included; the
  pages written are found by comparing file modification times), and
* in this process with ``Builder.build()`` (what a long-running watcher or worker would
  pay; the report lists the pages written),

a different article each time. Every rebuild must write exactly one article page, the
edited one, and that page must contain the new sentence. No-op rebuilds (nothing
edited) are measured too, as the baseline cost of looking at the whole site. Everything
runs with cwd=bench/.work/rebuild, without REDIS_URL or LETTERPRESS_* variables.

    .venv/bin/python bench/rebuild.py [-n 1000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from benchutil import clean_env, code_version, median
from corpus import generate

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work" / "rebuild"
LETTERPRESS = ROOT / ".venv" / "bin" / "letterpress"
TARGET_S = 0.4
HELP_TARGET_S = 0.2


@dataclass
class Rebuild:
    how: str  # "cli" or "in-process"
    slug: str
    seconds: float  # wall (CLI) or around Builder.build() (in-process)
    own: float  # what the build reports itself
    written: list[str]


def snapshot(out: Path) -> dict[str, int]:
    return {
        str(p.relative_to(out)): p.stat().st_mtime_ns
        for p in out.rglob("*")
        if p.is_file() and ".letterpress" not in p.parts
    }


def cli_build(out: Path, env: dict[str, str]) -> tuple[float, float, list[str]]:
    before = snapshot(out) if out.exists() else {}
    started = time.perf_counter()
    proc = subprocess.run(
        [str(LETTERPRESS), "build", "--content", "content", "--out", str(out)],
        cwd=WORK,
        env=env,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"letterpress build failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}")
    m = re.search(r"(\d+) page\(s\) written.* in ([\d.]+) s", proc.stdout)
    if not m:
        sys.exit(f"unexpected output: {proc.stdout}")
    after = snapshot(out)
    written = sorted(p for p, t in after.items() if before.get(p) != t)
    if len(written) != int(m.group(1)):
        sys.exit(f"the CLI says {m.group(1)} page(s) written, {len(written)} files changed")
    return elapsed, float(m.group(2)), written


def edit(path: Path, round_no: int) -> str:
    sentence = f"Rebuild benchmark edit number {round_no} adds this sentence."
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"\n{sentence}\n")
    return sentence


def describe(written: list[str]) -> str:
    """Article pages by name, the other pages grouped by kind."""
    articles = [p for p in written if p.startswith("articles/")]
    kinds = Counter(p.split("/")[0] if "/" in p else p for p in written if p not in articles)
    rest = ", ".join(f"{k}/ x{v}" if v > 1 else k for k, v in sorted(kinds.items()))
    return f"{len(articles)} article page(s) + {rest or 'nothing else'}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Rebuild after editing one article.")
    parser.add_argument("-n", type=int, default=1000, help="articles (default 1000)")
    parser.add_argument("--rounds", type=int, default=7, help="edits per method (default 7)")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)

    env = clean_env()
    for name in [k for k in os.environ if k == "REDIS_URL" or k.startswith("LETTERPRESS_")]:
        del os.environ[name]
    content, out = WORK / "content", WORK / "site"
    slugs = generate(content, None, args.n, args.seed)
    if out.exists():
        shutil.rmtree(out)
    os.chdir(WORK)  # same display paths (content/x.md) for the CLI and in-process builds
    if Path("letterpress.toml").exists():
        sys.exit(f"{WORK / 'letterpress.toml'} would change the settings")

    from pipeline.settings import load_settings
    from pipeline.site.build import Builder
    from pipeline.site.pool import SerialPool

    print(f"corpus: {args.n} articles in {WORK.relative_to(ROOT)}/content; {code_version()}")
    cold, cold_own, cold_written = cli_build(out, env)
    print(
        f"cold build (CLI, --pool auto): {cold:.2f} s wall ({cold_own:.2f} s reported),"
        f" {len(cold_written)} pages"
    )

    builder = Builder(load_settings(), Path("site"), content_dir=Path("content"), pool=SerialPool())
    first = time.perf_counter()
    report = builder.build()
    first_s = time.perf_counter() - first
    if report.written or not report.ok:
        sys.exit(f"first in-process build should write nothing: {report.written[:5]}")
    print(f"first in-process build in this process (templates, caches; untimed): {first_s:.2f} s")

    noop_cli, noop_in = [], []
    for _ in range(3):
        elapsed, _, written = cli_build(out, env)
        noop_cli.append(elapsed)
        if written:
            sys.exit(f"a no-op CLI rebuild wrote {written[:5]}")
        started = time.perf_counter()
        report = builder.build()
        noop_in.append(time.perf_counter() - started)
        if report.written:
            sys.exit(f"a no-op in-process rebuild wrote {report.written[:5]}")
    print(
        f"no-op rebuild (nothing edited), median of 3: CLI {median(noop_cli):.2f} s,"
        f" in-process {median(noop_in):.3f} s"
    )
    print()

    step = 379 if args.n > 379 else 1
    picks = list(dict.fromkeys((k * step + 17) % args.n for k in range(1, 4 * args.rounds)))
    order = [slugs[i] for i in picks][: 2 * args.rounds]
    if len(order) < 2 * args.rounds:
        sys.exit(f"need {2 * args.rounds} articles, the corpus has {args.n}")
    results: list[Rebuild] = []
    problems: list[str] = []
    print(f"{'round':<6}{'how':<12}{'seconds':>8}{'reported':>10}  written  (edited article)")
    for k, slug in enumerate(order, 1):
        sentence = edit(Path("content") / f"{slug}.md", k)
        if k % 2:
            elapsed, own, written = cli_build(out, env)
            result = Rebuild("CLI", slug, elapsed, own, written)
        else:
            started = time.perf_counter()
            report = builder.build()
            elapsed = time.perf_counter() - started
            if not report.ok:
                sys.exit(f"in-process rebuild reported problems: {report.problems[:3]}")
            result = Rebuild("in-process", slug, elapsed, report.seconds, sorted(report.written))
        results.append(result)
        pages = [p for p in result.written if p.startswith("articles/")]
        expected = f"articles/{slug}/index.html"
        if pages != [expected]:
            problems.append(f"edit {k} ({slug}): article pages written {pages}")
        elif sentence not in (out / expected).read_text(encoding="utf-8"):
            problems.append(f"edit {k} ({slug}): the new sentence is not on the page")
        others = ", ".join(p for p in result.written if not p.startswith("articles/"))
        print(
            f"{(k + 1) // 2:<6}{result.how:<12}{result.seconds:>7.3f}s{result.own:>9.3f}s"
            f"  {describe(result.written)}  ({slug[:40]})"
        )
        if others:
            print(f"{'':18}other pages written: {others}")

    print()
    verdicts = []
    for how in ("CLI", "in-process"):
        times = [r.seconds for r in results if r.how == how]
        reported = [r.own for r in results if r.how == how]
        baseline = median(noop_cli if how == "CLI" else noop_in)
        ok = median(times) < TARGET_S
        verdicts.append(ok)
        print(
            f"{how:<11} rebuild after one edit: median {median(times):.3f} s"
            f" (min {min(times):.3f}, max {max(times):.3f}, {len(times)} runs; build itself"
            f" {median(reported):.3f} s); {median(times) / baseline:.2f}x the no-op rebuild,"
            f" {median(times) / cold:.1%} of the cold build -> {'MET' if ok else 'NOT MET'}"
        )
    print(
        f"target < {TARGET_S} s: CLI {'MET' if verdicts[0] else 'NOT MET'},"
        f" in-process {'MET' if verdicts[1] else 'NOT MET'}"
    )
    helps = []
    for _ in range(5):
        started = time.perf_counter()
        subprocess.run([str(LETTERPRESS), "--help"], env=env, check=True, capture_output=True)
        helps.append(time.perf_counter() - started)
    print(
        f"letterpress --help: median {median(helps):.3f} s of 5 (min {min(helps):.3f});"
        f" target < {HELP_TARGET_S} s -> {'MET' if median(helps) < HELP_TARGET_S else 'NOT MET'}"
    )
    if problems:
        print("INCORRECT REBUILDS:")
        for line in problems:
            print(f"  {line}")
    else:
        print("every rebuild wrote exactly one article page, the edited one, with the new text")
    return 0


if __name__ == "__main__":
    sys.exit(main())
