"""One newsletter email render: 5 articles of the generated corpus, CSS inlined by premailer.

Target: one email render (5 articles, premailer) takes a median under
100 ms after warm-up.

The corpus is generated into bench/.work/email/content and read once. The email has 5
articles: the newest one that has an FAQ and an Amazon affiliate link (so the
disclosure, the FAQ and the disclaimer are all rendered), then the 4 newest others.
One ``EmailRenderer`` is made once and reused, as a worker would; each timed call is a
whole ``render()``: Markdown of the 5 bodies, HTML for email, the plain-text part,
templates and premailer. Two figures:

* default: the first article in full, the others as teasers (email_full_articles = 1);
* ``--full 5`` as a second figure: all five in full.

Settings are the embedded defaults (cwd=bench/.work/email, no REDIS_URL or LETTERPRESS_*
variables) with two overrides: a ``postal_address`` (an email without one is refused),
and ``email_clip_bytes`` raised so that an email over Gmail's clip limit is still
rendered (and reported) instead of raising EmailTooLarge. After the
timed renders, a few more are broken down into Markdown bodies, premailer and the rest.

    .venv/bin/python bench/email_render.py [-n 1000] [--warmup 3] [--renders 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchutil import code_version, median, percentile
from corpus import generate

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work" / "email"
TARGET_MS = 100.0
GMAIL_CLIP = 102_000
POSTAL_ADDRESS = "Letterpress Bench, 100 Example Street, Springfield, IL 62701, USA"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="One email render, 5 articles.")
    parser.add_argument("-n", type=int, default=1000, help="articles in the corpus (1000)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed renders first (3)")
    parser.add_argument("--renders", type=int, default=30, help="timed renders (30)")
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args(argv)

    for name in [k for k in os.environ if k == "REDIS_URL" or k.startswith("LETTERPRESS_")]:
        del os.environ[name]
    generate(WORK / "content", None, args.n, args.seed)
    os.chdir(WORK)
    if Path("letterpress.toml").exists():
        sys.exit(f"{WORK / 'letterpress.toml'} would change the settings")

    from pipeline.content.store import FileContentStore
    from pipeline.render import emails
    from pipeline.render.markup import Renderer
    from pipeline.settings import load_settings

    settings = load_settings(email_clip_bytes=10_000_000, postal_address=POSTAL_ADDRESS)
    catalog = FileContentStore(Path("content"), settings).catalog()
    published = catalog.published()  # newest first
    lead = next((a for a in published if a.faq and "?tag=" in a.body), published[0])
    slugs = [lead.slug, *[a.slug for a in published if a.slug != lead.slug][:4]]
    renderer = emails.EmailRenderer(settings)

    print(f"corpus: {args.n} articles in {WORK.relative_to(ROOT)}/content; {code_version()}")
    print("email articles:")
    for slug in slugs:
        a = catalog.articles[slug]
        extras = [f"{len(a.body.encode()):,} B of Markdown"]
        extras += [f"{len(a.faq)} FAQ"] if a.faq else []
        extras += ["Amazon link"] if "?tag=" in a.body else []
        print(f"  {slug} ({', '.join(extras)})")
    print(f"renders: {args.warmup} warm-up + {args.renders} timed, in this process")
    print()

    figures: list[tuple[str, float]] = []
    for label, full in (("1 full + 4 teasers (default)", None), ("--full 5 (all in full)", 5)):
        warm = []
        for _ in range(max(1, args.warmup)):
            started = time.perf_counter()
            email = renderer.render(catalog, slugs, full_articles=full)
            warm.append((time.perf_counter() - started) * 1000)
        times = []
        for _ in range(args.renders):
            started = time.perf_counter()
            email = renderer.render(catalog, slugs, full_articles=full)
            times.append((time.perf_counter() - started) * 1000)
        parts = breakdown(renderer, emails, Renderer, catalog, slugs, full)
        med = median(times)
        figures.append((label, med))
        clip = "over" if email.size > GMAIL_CLIP else "under"
        print(f"{label}:")
        print(
            f"  median {med:.1f} ms, p90 {percentile(times, 90):.1f} ms,"
            f" min {min(times):.1f} ms, max {max(times):.1f} ms"
            f" (warm-up renders: {', '.join(f'{w:.0f}' for w in warm)} ms)"
        )
        print(
            f"  HTML {email.size:,} bytes ({clip} Gmail's {GMAIL_CLIP:,}-byte clip),"
            f" text part {len(email.text.encode()):,} bytes, affiliate: {email.has_affiliate}"
        )
        print(
            "  where the time goes (median of 5 instrumented renders): "
            + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items())
        )
    print()
    first = figures[0][1]
    print(f"--full 5 costs {figures[1][1] / first:.2f}x the default email")
    verdict = "MET" if first < TARGET_MS else "NOT MET"
    print(f"target: median < {TARGET_MS:.0f} ms for the default email: {verdict} ({first:.1f} ms)")
    print(
        f"        (all five in full: {'under' if figures[1][1] < TARGET_MS else 'over'}"
        f" {TARGET_MS:.0f} ms, {figures[1][1]:.1f} ms)"
    )
    return 0


def breakdown(
    renderer: Any, emails: Any, renderer_cls: Any, catalog: Any, slugs: list[str], full: int | None
) -> dict[str, float]:
    """Time Markdown bodies and premailer inside a few renders by wrapping them."""
    spent = {"markdown bodies": 0.0, "premailer": 0.0}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += (time.perf_counter() - started) * 1000

        return wrapper

    original_inline, original_body = emails.inline_css, renderer_cls.body
    emails.inline_css = timed("premailer", original_inline)
    renderer_cls.body = timed("markdown bodies", original_body)
    samples: dict[str, list[float]] = {"total": [], "markdown bodies": [], "premailer": []}
    try:
        for _ in range(5):
            spent.update({"markdown bodies": 0.0, "premailer": 0.0})
            started = time.perf_counter()
            renderer.render(catalog, slugs, full_articles=full)
            samples["total"].append((time.perf_counter() - started) * 1000)
            for key, value in spent.items():
                samples[key].append(value)
    finally:
        emails.inline_css, renderer_cls.body = original_inline, original_body
    result = {k: median(v) for k, v in samples.items()}
    result["rest"] = result["total"] - result["markdown bodies"] - result["premailer"]
    return result


if __name__ == "__main__":
    sys.exit(main())
