"""Subscriber CSV import: a 1,000,000-row file into SQLite and into PostgreSQL.

Target (issue 13): importing 1,000,000 rows takes under 30 s on this 2-core machine, on
SQLite and on PostgreSQL, with memory that does not grow with the file. The baseline,
measured in the same process: a bare load of the same good rows into the same empty
tables (subscribers and their memberships), with nothing validated or looked up: the
driver's executemany of a plain INSERT on SQLite, COPY straight into the tables on
PostgreSQL, in the import's transactions of 25,000 rows. The ratio import/bare is what
the import adds to what the database itself takes.

The file is generated once per size and seed into bench/.work/subscribers/ (UTF-8 with
a byte-order mark and CRLF line endings, as Excel's "CSV UTF-8" writes it): names
(some with accents, some quoted because of a comma), addresses at common mail domains
and company domains (some in mixed case or with a +tag), IANA time zones (a tenth
empty), lists (``weekly``, ``offers``, ``events``, separated by ``;``) and three
attribute columns (``plan``, ``signup_source``, ``country``, sometimes empty). A few
bad rows are planted: invalid addresses, an unknown time zone, a row with an extra
field, an address repeated in another case; plus one empty row, which is skipped.

Every measurement is a fresh process (so its peak RSS is its own) that creates an empty
database, migrates it, times ``pipeline.audience.imports.import_csv`` on the file (worker
start-up and the UTF-8 check included), then times importing the same file again
(which must change nothing). SQLite is a new file under bench/.work/subscribers/;
PostgreSQL is a dedicated database (default ``letterpress_bench`` on the test server,
created if missing, its ``public`` schema dropped and re-created each round), never
the ``test`` database the test suite resets. The report gives the median of the rounds,
rows per second, peak RSS of the importing process and of its largest worker, and
checks that the bad rows reported are exactly the planted ones. An import of a tenth of
the rows is measured first to show that peak memory does not grow with the file.

    .venv/bin/python bench/import_subscribers.py [-n 1000000] [--rounds 3] [--seed 7]
        [--postgres URL] [--no-postgres]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchutil import clean_env, code_version, machine, median

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
WORK = BENCH / ".work" / "subscribers"
TARGET_S = 30.0
POSTGRES = "postgresql://postgres@127.0.0.1:5432/letterpress_bench"

FIRST = [
    ("James", "james"), ("Mary", "mary"), ("Robert", "robert"), ("Patricia", "patricia"),
    ("John", "john"), ("Jennifer", "jennifer"), ("Michael", "michael"), ("Linda", "linda"),
    ("David", "david"), ("Elizabeth", "elizabeth"), ("William", "william"), ("Susan", "susan"),
    ("José", "jose"), ("María", "maria"), ("Zoë", "zoe"), ("Chloé", "chloe"),
    ("Øyvind", "oyvind"), ("Søren", "soren"), ("Amélie", "amelie"), ("Jürgen", "juergen"),
    ("Wei", "wei"), ("Yuki", "yuki"), ("Aarav", "aarav"), ("Fatima", "fatima"),
    ("Olumide", "olumide"), ("Siobhán", "siobhan"), ("Łukasz", "lukasz"), ("Nguyễn", "nguyen"),
]  # fmt: skip
LAST = [
    ("Smith", "smith"), ("Johnson", "johnson"), ("Williams", "williams"), ("Brown", "brown"),
    ("Jones", "jones"), ("Garcia", "garcia"), ("Miller", "miller"), ("Davis", "davis"),
    ("Müller", "mueller"), ("Dubois", "dubois"), ("Rossi", "rossi"), ("Novák", "novak"),
    ("Kowalski", "kowalski"), ("O'Brien", "obrien"), ("Tanaka", "tanaka"), ("Chen", "chen"),
    ("Okafor", "okafor"), ("Haddad", "haddad"), ("Johansson", "johansson"), ("Silva", "silva"),
]  # fmt: skip
MAIL_DOMAINS = [
    ("gmail.com", 35), ("yahoo.com", 9), ("outlook.com", 9), ("hotmail.com", 7),
    ("icloud.com", 7), ("proton.me", 3), ("aol.com", 2), ("gmx.de", 3), ("web.de", 2),
    ("orange.fr", 2), ("libero.it", 1), ("yahoo.co.jp", 1),
]  # fmt: skip
ZONES = [
    "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles",
    "America/Phoenix", "America/Toronto", "America/Sao_Paulo", "America/Mexico_City",
    "Europe/London", "Europe/Paris", "Europe/Berlin", "Europe/Madrid", "Europe/Rome",
    "Europe/Amsterdam", "Europe/Stockholm", "Europe/Warsaw", "Europe/Istanbul",
    "Africa/Lagos", "Africa/Johannesburg", "Asia/Dubai", "Asia/Kolkata", "Asia/Singapore",
    "Asia/Shanghai", "Asia/Tokyo", "Asia/Seoul", "Australia/Sydney", "Pacific/Auckland",
    "UTC",
]  # fmt: skip
COUNTRIES = ["US", "US", "US", "GB", "DE", "FR", "ES", "IT", "NL", "SE", "PL", "JP", "IN", "BR"]
HEADER = ["email", "name", "time_zone", "lists", "plan", "signup_source", "country"]


def generate(path: Path, n: int, seed: int) -> dict[str, Any]:
    """Write the CSV; return what it should import as (planted bad lines and counts)."""
    rng = random.Random(seed)
    domains = [d for d, w in MAIL_DOMAINS for _ in range(w)]
    companies = [f"{w}{k}.com" for k in range(300) for w in ("acme", "globex", "initech")]
    bad_at = {round(n * f): kind for f, kind in (
        (0.05, "no domain"), (0.21, "spaces"), (0.40, "time zone"), (0.63, "extra field"),
        (0.81, "repeated"), (0.97, "two @"),
    )}  # fmt: skip
    empty_at = round(n * 0.5)
    bad_lines: dict[int, str] = {}
    first_email = ""
    line = 1  # the header
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8-sig", newline="") as handle:
        out = csv.writer(handle)  # CRLF, like Excel
        out.writerow(HEADER)
        for i in range(n):
            if i == empty_at:
                handle.write("\r\n")
                line += 1
            first, first_ascii = rng.choice(FIRST)
            last, last_ascii = rng.choice(LAST)
            domain = rng.choice(companies) if rng.random() < 0.18 else rng.choice(domains)
            local = rng.choice(
                (f"{first_ascii}.{last_ascii}{i}", f"{first_ascii[0]}{last_ascii}{i}",
                 f"{first_ascii}_{i}", f"{last_ascii}.{first_ascii}.{i}")
            )  # fmt: skip
            if rng.random() < 0.05:
                local += "+news"
            if rng.random() < 0.1:
                local = local.capitalize()
            email = f"{local}@{domain}"
            name = f"{first} {last}" if rng.random() < 0.97 else f"{last}, {first}"
            zone = rng.choice(ZONES) if rng.random() < 0.9 else ""
            lists = [n for n, p in (("weekly", 0.85), ("offers", 0.25), ("events", 0.08))
                     if rng.random() < p]  # fmt: skip
            row = [
                email, name, zone, ";".join(lists),
                rng.choice(("free", "free", "free", "pro", "team")),
                rng.choice(("web", "web", "import", "event", "referral", "")),
                rng.choice(COUNTRIES) if rng.random() < 0.8 else "",
            ]  # fmt: skip
            line += 1
            kind = bad_at.get(i)
            if kind == "no domain":
                row[0] = f"{local}@"
            elif kind == "spaces":
                row[0] = f"{first} {last} at {domain}"
            elif kind == "time zone":
                row[2] = "Mars/Olympus_Mons"
            elif kind == "extra field":
                row.append("unexpected")
            elif kind == "repeated":
                row[0] = first_email.upper()
            elif kind == "two @":
                row[0] = f"{local}@@{domain}"
            if kind:
                bad_lines[line] = kind
            if i == 0:
                first_email = email
            out.writerow(row)
    return {"rows": n, "bad_lines": bad_lines, "size": path.stat().st_size}


def cpu_seconds(who: int) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def server_cpu(engine: Any) -> dict[int, float]:
    """CPU seconds used so far by each PostgreSQL backend serving this database (the
    server runs on this machine); empty for SQLite or when /proc cannot tell."""
    import sqlalchemy as sa

    if engine.dialect.name != "postgresql":
        return {}
    with engine.connect() as conn:
        pids = conn.execute(
            sa.text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
        ).scalars()
        result = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            result[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return result


def timed_import(engine: Any, path: Path) -> tuple[Any, dict[str, Any]]:
    """One import, with its wall time, CPU time (here, workers, database server) and load."""
    from pipeline.audience import imports

    load = os.getloadavg()[0]
    here, workers = cpu_seconds(resource.RUSAGE_SELF), cpu_seconds(resource.RUSAGE_CHILDREN)
    server = server_cpu(engine)
    started = time.perf_counter()
    report = imports.import_csv(engine, path)
    seconds = time.perf_counter() - started
    server_after = server_cpu(engine)
    return report, {
        "seconds": seconds,
        "cpu_importer": cpu_seconds(resource.RUSAGE_SELF) - here,
        "cpu_workers": cpu_seconds(resource.RUSAGE_CHILDREN) - workers,
        "cpu_server": sum(v - server.get(pid, 0.0) for pid, v in server_after.items())
        if server_after
        else None,
        "load": (load, os.getloadavg()[0]),
    }


def bare_load(url: str, path: Path, bad_lines: set[int]) -> tuple[float, int]:
    """Seconds to load the file's good rows into an empty database with nothing checked:
    the floor an import is measured against (see the module docstring); and the number of
    subscribers it wrote."""
    import sqlalchemy as sa

    from pipeline.store import db

    fresh_database(url)
    db.upgrade(url)
    engine = db.engine(url)
    now = db.now()
    postgres = engine.dialect.name == "postgresql"
    stamp = now if postgres else now.strftime("%Y-%m-%d %H:%M:%S.%f")
    with engine.connect() as conn:
        with conn.begin():
            list_ids = {
                name: conn.execute(
                    sa.insert(db.lists).values(name=name, created_at=now).returning(db.lists.c.id)
                ).scalar_one()
                for name in ("weekly", "offers", "events")
            }
        driver: Any = conn.connection.dbapi_connection
        if not postgres:
            driver.execute("PRAGMA cache_size = -65536")  # as the import sets it
        started = time.perf_counter()
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.reader(handle)
            next(reader)
            people: list[tuple[Any, ...]] = []
            joins: list[tuple[int, int, Any, bool]] = []
            number = 0  # ids follow the file
            for fields in reader:
                if not fields or reader.line_num in bad_lines:
                    continue
                email, name, zone, lists, plan, source, country = fields
                number += 1
                attributes = {"plan": plan, "signup_source": source, "country": country}
                people.append((number, email.lower(), name, "active", zone or "UTC",
                               json.dumps({k: v for k, v in attributes.items() if v}),
                               stamp, stamp, stamp))  # fmt: skip
                joins += [(list_ids[n], number, stamp, True) for n in lists.split(";") if n]
                if len(people) == 25_000:
                    _bare_write(conn, postgres, people, joins)
                    people, joins = [], []
            _bare_write(conn, postgres, people, joins)
        seconds = time.perf_counter() - started
        count = conn.execute(sa.select(sa.func.count()).select_from(db.subscribers)).scalar_one()
        conn.rollback()
    return seconds, count


def _bare_write(conn: Any, postgres: bool, people: list[Any], joins: list[Any]) -> None:
    columns = "id, email, name, status, time_zone, attributes, created_at, confirmed_at, updated_at"
    with conn.begin():
        driver: Any = conn.connection.dbapi_connection
        if postgres:
            with driver.cursor() as cursor:
                with cursor.copy(f"COPY subscribers ({columns}) FROM STDIN") as copy:
                    for row in people:
                        copy.write_row(row)
                with cursor.copy(
                    "COPY memberships (list_id, subscriber_id, created_at, recipient) FROM STDIN"
                ) as copy:
                    for row in joins:
                        copy.write_row(row)
        else:
            conn.exec_driver_sql(f"INSERT INTO subscribers ({columns}) VALUES (?,?,?,?,?,?,?,?,?)",
                                 people)  # fmt: skip
            conn.exec_driver_sql("INSERT INTO memberships (list_id, subscriber_id, created_at,"
                                 " recipient) VALUES (?,?,?,?)", joins)  # fmt: skip


def measure(url: str, path: Path, again: bool, bad_lines: set[int] | None) -> dict[str, Any]:
    """In a fresh process: empty database, import, import again, then the bare load of
    the same rows into an empty database; times, CPU, peak RSS."""
    import sqlalchemy as sa

    from pipeline.audience import subscribers
    from pipeline.store import db

    fresh_database(url)
    db.upgrade(url)
    engine = db.engine(url)
    report, first = timed_import(engine, path)
    result: dict[str, Any] = {
        **first,
        "summary": report.summary(),
        "new": report.new,
        "problems": [(p.line, p.message) for p in report.problems],
        "count": subscribers.count(engine),
        "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "worker_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    if again:
        second, timing = timed_import(engine, path)
        result["again"] = timing
        result["again_seconds"] = timing["seconds"]
        result["again_summary"] = second.summary()
        result["again_changed"] = second.new + second.updated
    with engine.connect() as conn:
        result["memberships"] = conn.execute(
            sa.select(sa.func.count()).select_from(db.memberships)
        ).scalar_one()
    engine.dispose()
    if bad_lines is not None:
        result["bare_seconds"], result["bare_count"] = bare_load(url, path, bad_lines)
    return result


def fresh_database(url: str) -> None:
    from pipeline.store import db

    if url.startswith("sqlite:///"):
        file = Path(url.removeprefix("sqlite:///"))
        for suffix in ("", "-wal", "-shm"):
            Path(f"{file}{suffix}").unlink(missing_ok=True)
        return
    import sqlalchemy as sa

    name = sa.make_url(db.normalise_url(url)).database
    server = sa.make_url(db.normalise_url(url)).set(database="postgres")
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        exists = conn.execute(
            sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
        ).first()
        if not exists:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    admin.dispose()
    with db.engine(url).begin() as conn:
        conn.exec_driver_sql("DROP SCHEMA IF EXISTS public CASCADE")
        conn.exec_driver_sql("CREATE SCHEMA public")


def run_child(
    url: str, path: Path, again: bool, bad_lines: dict[int, str] | None = None
) -> dict[str, Any]:
    """One measurement in a process of its own; with ``bad_lines``, the bare load too."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--measure", url, str(path)]
    argv += ["--again"] if again else []
    if bad_lines is not None:
        argv += ["--bad-lines", ",".join(str(n) for n in bad_lines)]
    proc = subprocess.run(argv, cwd=WORK, env=clean_env(), capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"measurement failed ({url}):\n{proc.stderr}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


def cpu(timing: dict[str, Any]) -> str:
    """CPU seconds by process, and the machine's load average before and after."""
    parts = [f"importer {timing['cpu_importer']:.0f}", f"workers {timing['cpu_workers']:.0f}"]
    if timing["cpu_server"] is not None:
        parts.append(f"server {timing['cpu_server']:.0f}")
    before, after = timing["load"]
    return f"CPU s: {', '.join(parts)}; load {before:.1f}->{after:.1f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Subscriber CSV import, 1,000,000 rows.")
    parser.add_argument("-n", type=int, default=1_000_000, help="rows in the file (1000000)")
    parser.add_argument("--rounds", type=int, default=3, help="imports per database (3)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--postgres", default=POSTGRES, help=f"a database of its own ({POSTGRES})")
    parser.add_argument("--no-postgres", action="store_true", help="measure SQLite only")
    parser.add_argument("--measure", nargs=2, metavar=("URL", "CSV"), help=argparse.SUPPRESS)
    parser.add_argument("--again", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bad-lines", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.measure:
        url, csv_path = args.measure
        bad_lines = None
        if args.bad_lines is not None:
            bad_lines = {int(n) for n in args.bad_lines.split(",") if n}
        print(json.dumps(measure(url, Path(csv_path), args.again, bad_lines)))
        return 0

    WORK.mkdir(parents=True, exist_ok=True)
    sys.path.insert(0, str(ROOT))
    postgres = None if args.no_postgres else args.postgres
    small_n = max(args.n // 10, 1000)  # the memory check: a tenth of the rows
    files = {}
    for size in (small_n, args.n):
        path = WORK / f"subscribers-{size}-{args.seed}.csv"
        started = time.perf_counter()
        files[size] = (path, generate(path, size, args.seed))
        if size == args.n:
            made = time.perf_counter() - started
    path, expected = files[args.n]
    bad = expected["bad_lines"]
    print(
        f"file: {args.n:,} rows, {expected['size'] / 1e6:.1f} MB"
        f" ({path.relative_to(ROOT)}, generated in {made:.1f} s), {len(bad)} planted bad rows"
        " and 1 empty row"
    )
    print(f"measured: {code_version()}; {machine(postgres)}")
    print(f"rounds: {args.rounds} per database, each a fresh process and an empty database")
    print(
        "CPU s: seconds of CPU used by the importing process, its validating workers and the"
        " PostgreSQL server; load: 1-minute load average (2 CPUs) before and after, as the"
        " machine is shared"
    )
    print()

    small = run_child(f"sqlite:///{WORK / 'small.db'}", files[small_n][0], again=False)
    print(
        f"memory check, {small_n:,} rows into SQLite: {small['seconds']:.1f} s,"
        f" peak RSS {small['rss_mb']:.0f} MB (workers {small['worker_rss_mb']:.0f} MB);"
        f" compare with {args.n:,} rows below"
    )
    print()

    verdicts = []
    targets = [("SQLite", f"sqlite:///{WORK / 'bench.db'}")]
    targets += [("PostgreSQL", postgres)] if postgres else []
    for label, url in targets:
        print(f"{label}:")
        results = []
        for number in range(1, args.rounds + 1):
            result = run_child(url, path, again=True, bad_lines=bad)
            results.append(result)
            print(
                f"  round {number}: import {result['seconds']:.1f} s"
                f" ({args.n / result['seconds']:,.0f} rows/s; {cpu(result)}),"
                f" peak RSS {result['rss_mb']:.0f} MB, workers {result['worker_rss_mb']:.0f} MB"
            )
            print(
                f"           re-import {result['again_seconds']:.1f} s"
                f" ({args.n / result['again_seconds']:,.0f} rows/s; {cpu(result['again'])})"
            )
            print(
                f"           bare load {result['bare_seconds']:.1f} s"
                f" (import/bare = {result['seconds'] / result['bare_seconds']:.2f}x)"
            )
        last = results[-1]
        seconds = median([r["seconds"] for r in results])
        again = median([r["again_seconds"] for r in results])
        bare = median([r["bare_seconds"] for r in results])
        print(f"  median: import {seconds:.1f} s = {args.n / seconds:,.0f} rows/s;"
              f" re-import {again:.1f} s = {args.n / again:,.0f} rows/s;"
              f" bare load {bare:.1f} s; import/bare {seconds / bare:.2f}x")  # fmt: skip
        print(f"  {last['summary']}")
        print(f"  again: {last['again_summary']}")
        print(f"  in the database: {last['count']:,} subscribers, {last['memberships']:,}"
              " memberships")  # fmt: skip
        for line, message in last["problems"]:
            print(f"    {path.name}:{line}: {message}")
        reported = {line for line, _ in last["problems"]}
        planted = {int(k) for k in bad}
        checks = [
            ("bad rows are the planted ones", reported == planted),
            ("every good row imported", last["count"] == args.n - len(planted)),
            ("re-import changed nothing", all(r["again_changed"] == 0 for r in results)),
            ("the bare load wrote as many", all(r["bare_count"] == r["count"] for r in results)),
        ]
        for what, ok in checks:
            print(f"  check: {what}: {'yes' if ok else 'NO'}")
        verdicts.append((label, seconds, bare, all(ok for _, ok in checks)))
        print()

    for label, seconds, bare, ok in verdicts:
        verdict = "MET" if seconds < TARGET_S and ok else "NOT MET"
        print(
            f"target: {args.n:,} rows in < {TARGET_S:.0f} s on {label}: {verdict}"
            f" (median {seconds:.1f} s, {seconds / bare:.2f}x the bare load's {bare:.1f} s"
            f"{'' if ok else ', checks failed'})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
