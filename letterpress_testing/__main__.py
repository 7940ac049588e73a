"""The provider double in a process of its own, until SIGTERM or SIGINT:

    python -m letterpress_testing [--port 8025] [--keep-messages] [--seed 1] ...

It prints ``listening on http://127.0.0.1:PORT`` once it serves (``--port 0``, the
default: any free port), so a parent process can read the address from its output.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from letterpress_testing.server import DoubleServer


def _options(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m letterpress_testing",
        description="A stand-in for Mailgun, SendGrid and Postmark on 127.0.0.1.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (default: any free one)")
    parser.add_argument("--keep-messages", action="store_true", help="keep what each got")
    parser.add_argument("--keep-requests", action="store_true", help="keep raw requests")
    parser.add_argument(
        "--no-idempotency", action="store_true", help="ignore Idempotency-Key headers"
    )
    parser.add_argument("--seed", type=int, default=None, help="seed of the fault dice")
    parser.add_argument("--mailgun-key", default="key-double")
    parser.add_argument("--sendgrid-key", default="SG.double")
    parser.add_argument("--postmark-token", default="postmark-double")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _options(argv)
    done = threading.Event()

    def stop(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    with DoubleServer(
        port=args.port,
        keep_messages=args.keep_messages,
        keep_requests=args.keep_requests,
        idempotency=not args.no_idempotency,
        seed=args.seed,
        mailgun_key=args.mailgun_key,
        sendgrid_key=args.sendgrid_key,
        postmark_token=args.postmark_token,
    ) as double:
        print(f"listening on {double.url}", flush=True)
        while not done.wait(0.5):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
