"""What DKIM signing costs the adapters that build their messages (outbox, SMTP).

No target: a figure for the note. The outbox writes one batch of 100 personalised copies
of a real newsletter (the two seed articles rendered once) into a temporary folder,
without DKIM (the baseline, measured in the same run) and with a 2048-bit RSA key;
each variant runs ``--rounds`` times after a warm-up, and the medians are compared.
The load average is printed before and after, since the machine is shared.

    .venv/bin/python bench/dkim_sign.py [--rounds 5] [--recipients 100]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from benchutil import ROOT, code_version, median

from pipeline.content.store import FileContentStore
from pipeline.render.emails import EmailRenderer
from pipeline.sending import dkim
from pipeline.sending.providers.base import Message, Recipient
from pipeline.sending.providers.outbox import OutboxProvider
from pipeline.settings import Settings

SEEDS = [
    "vitamin-k2-for-directing-calcium-to-bones",
    "the-role-of-vitamin-k2-in-calcium-distribution",
]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--recipients", type=int, default=100)
    args = parser.parse_args()
    print(code_version(), f"load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "dkim.pem"
        key.write_bytes(dkim.new_key())
        base = {
            "content_dir": ROOT / "content",
            "postal_address": "1 Bench Street",
            "sender_email": "news@example.org",
            "outbox_dir": Path(tmp) / "outbox",
        }
        settings = Settings(**base)  # type: ignore[arg-type]
        email = EmailRenderer(settings).render(
            FileContentStore(settings.content_dir, settings).catalog(), SEEDS
        )
        message = Message(
            subject=email.subject,
            html=email.html,
            text=email.text,
            from_name="Bench",
            from_email="news@example.org",
            tag="bench",
            headers={"List-Unsubscribe-Post": "List-Unsubscribe=One-Click"},
            metadata={"issue": "1"},
        )
        people = [
            Recipient(
                n,
                f"reader{n}@example.com",
                f"Reader {n}",
                {"unsubscribe_url": f"https://news.example.org/u/{n}", "name": f"Reader {n}"},
                {"List-Unsubscribe": f"<https://news.example.org/u/{n}>"},
            )
            for n in range(1, args.recipients + 1)
        ]
        figures = {}
        for label, extra in [
            ("outbox, no DKIM (baseline)", {}),
            ("outbox, DKIM rsa-sha256 2048", {"dkim_private_key": str(key), "dkim_selector": "b"}),
        ]:
            outbox = OutboxProvider(Settings(**base, **extra))  # type: ignore[arg-type]
            outbox.send(message, people[:5], "warm-up")
            times = []
            for r in range(args.rounds):
                started = time.perf_counter()
                outbox.send(message, people, f"round-{r}")
                times.append(time.perf_counter() - started)
            figures[label] = median(times)
        size = len(email.html.encode()) + len(email.text.encode())
        print(f"{args.recipients} messages of about {size / 1000:.0f} KB, median of {args.rounds}")
        baseline = next(iter(figures.values()))
        for label, seconds in figures.items():
            per = seconds / args.recipients * 1000
            print(f"{label:32} {seconds:7.3f} s  {per:6.2f} ms/message  x{seconds / baseline:.2f}")
    print(f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
