"""Compiled CommonMark engines against markdown-it-py: spec examples and speed.

For each engine, in a venv of its own making (bench/.venv-markdown, filled from PyPI on
first use): how many of the 652 CommonMark 0.31.2 spec examples it renders exactly as
the spec says (bench/data/commonmark-spec-0.31.2.json), and how long it takes to render
the bodies of the generated benchmark corpus (bench/corpus.py, 1,000 articles of about
10 KB), median of the rounds, all engines alternating within each round. Each engine
renders with raw HTML allowed, as Letterpress does (nh3 sanitises afterwards).

    .venv/bin/python bench/markdown_engines.py [-n 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchutil import median
from corpus import generate

BENCH = Path(__file__).resolve().parent
VENV = BENCH / ".venv-markdown"
SPEC = BENCH / "data" / "commonmark-spec-0.31.2.json"
PACKAGES = ["markdown-it-py", "cmarkgfm", "pyromark", "markdown-it-pyrs"]

# Runs inside the engines' venv: argv = spec file, corpus folder, rounds; prints JSON.
PROBE = r"""
import json, sys, time, importlib.metadata as meta
from pathlib import Path
spec = json.loads(Path(sys.argv[1]).read_text())
bodies = [p.read_text().split("\n---\n", 1)[1] for p in sorted(Path(sys.argv[2]).glob("*.md"))]
rounds = int(sys.argv[3])

def engines():
    from markdown_it import MarkdownIt
    yield "markdown-it-py", "markdown-it-py", MarkdownIt("commonmark", {"html": True}).render
    import cmarkgfm
    from cmarkgfm.cmark import Options
    yield "cmarkgfm", "cmarkgfm", lambda t: cmarkgfm.markdown_to_html_with_extensions(
        t, options=Options.CMARK_OPT_UNSAFE, extensions=["table", "strikethrough"])
    import pyromark
    yield "pyromark", "pyromark", pyromark.html
    import markdown_it_pyrs
    yield "markdown-it-pyrs", "markdown-it-pyrs", markdown_it_pyrs.MarkdownIt("commonmark").render

found = list(engines())
out = {}
for name, dist, render in found:
    failed = [e["number"] for e in spec if render(e["markdown"]) != e["html"]]
    out[name] = {"version": meta.version(dist), "spec_failed": failed, "seconds": []}
for r in range(rounds):
    for i in range(len(found)):
        name, dist, render = found[(i + r) % len(found)]
        started = time.perf_counter()
        for body in bodies:
            render(body)
        out[name]["seconds"].append(time.perf_counter() - started)
print(json.dumps(out))
"""


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"installing {', '.join(PACKAGES)} into {VENV} (benchmark only) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", *PACKAGES], check=True)
    return python


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=1000, help="articles in the corpus")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    python = ensure_venv()
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "letterpress"
        generate(corpus, None, args.n)
        done = subprocess.run(
            [str(python), "-c", PROBE, str(SPEC), str(corpus), str(args.rounds)],
            capture_output=True, text=True, env={**os.environ, "PYTHONHASHSEED": "0"},
        )  # fmt: skip
    if done.returncode:
        print(done.stderr, file=sys.stderr)
        return 1
    results = json.loads(done.stdout)
    total = len(json.loads(SPEC.read_text()))
    base = median(results["markdown-it-py"]["seconds"])
    print(f"\n{args.n} corpus bodies, median of {args.rounds} rounds; spec: CommonMark 0.31.2\n")
    print(f"{'engine':28} {'spec examples':>14} {'corpus':>10} {'vs markdown-it-py':>18}")
    for name, r in results.items():
        seconds = median(r["seconds"])
        passed = total - len(r["spec_failed"])
        print(f"{name + ' ' + r['version']:28} {passed:>8}/{total} {seconds * 1000:>7.0f} ms"
              f" {base / seconds:>16.1f}x")  # fmt: skip
    print("\nspec examples each engine renders differently from the spec:")
    for name, r in results.items():
        print(f"  {name}: {', '.join(map(str, r['spec_failed'])) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
