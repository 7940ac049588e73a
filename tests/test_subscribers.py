"""Subscribers: addresses, statuses, lists, CSV import and export, and the CLI, on SQLite
and PostgreSQL."""

from __future__ import annotations

import io
import random
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result
from email_validator import EmailNotValidError, validate_email

from pipeline.audience import changes, consent, exports, imports, lists
from pipeline.audience import subscribers as subs
from pipeline.cli.common import Context
from pipeline.cli.subscribers import subscribers as cli
from pipeline.errors import LetterpressError, NotFound
from pipeline.store import db


def set_status(engine: sa.Engine, subscriber_id: int, status: str) -> None:
    """An editor's explicit change of status: what the admin API's PATCH and the CLI do."""
    changes.update(engine, subscriber_id, changes.Change(status=status), via=changes.ADMIN_API)


# -- addresses, time zones ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "stored"),
    [
        ("ann@example.org", "ann@example.org"),
        ("  Ann.Lee@Example.ORG \t", "ann.lee@example.org"),
        ("BOB+news@GMAIL.com", "bob+news@gmail.com"),
        ("José@Bücher.DE", "josé@bücher.de"),
        ("user@xn--bcher-kva.de", "user@bücher.de"),
    ],
)
def test_addresses_are_normalised_and_lower_cased(raw: str, stored: str) -> None:
    assert subs.normalise_email(raw) == stored


@pytest.mark.parametrize(
    ("raw", "says"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("plainaddress", "must have an @-sign"),
        ("ann@", "something after the @-sign"),
        ("ann@localhost", "should have a period"),
        ("ann@@example.org", "invalid characters"),
        ("ann lee@example.org", "invalid characters"),
        ("Ann <ann@example.org>", "not a valid email address"),
        ("a..b@example.org", "two periods"),
        ('"quoted"@example.org', "Quoting"),
    ],
)
def test_bad_addresses_are_refused_with_a_reason(raw: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        subs.normalise_email(raw)
    if raw.strip():
        assert repr(raw.strip()) in str(caught.value)


def _library(text: str) -> str:
    """email-validator in full, as ``normalise_email`` uses it for unusual addresses."""
    try:
        return validate_email(text, check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        return f"refused: {text!r} is not a valid email address: {exc}"


def _ours(text: str) -> str:
    try:
        return subs.normalise_email(text)
    except ValueError as exc:
        return f"refused: {exc}"


EDGES = [
    "ann@example.org", "ANN@EXAMPLE.ORG", "Postmaster@Example.org", "a.b.c@x.co.uk",
    "a..b@x.com", ".a@x.com", "a.@x.com", "a@x.com.", "a@.x.com", "a@x..com", "a@x",
    "a@localhost", "a@x.local", "a@x.test", "a@x.invalid", "a@x.onion", "a@x.arpa",
    "a@example.com", "a@x.example", "a@1.2.3.4", "a@x.123", "a@x.c0m", "a@-x.com",
    "a@x-.com", "a@x--y.com", "a@ab--cd.com", "a@xn--bcher-kva.de", "a@XN--BCHER-KVA.DE",
    "a@xn--zz.com", "a@xn--.com", "a@x.xn--p1ai", "a@x.xn--zzzz", "a@x_y.com",
    "a!#$%&'*+/=?^_`{|}~-@x.com", "=?utf-8?q?a?=@x.com", "a@x.c", "a@" + "x" * 63 + ".com",
    "a@" + "x" * 64 + ".com", "x" * 64 + "@x.com", "x" * 65 + "@x.com",
    "a@" + ".".join(["x" * 60] * 4) + ".com", "x" * 64 + "@" + ".".join(["y" * 62] * 3) + ".com",
    "x" * 60 + "@" + ".".join(["y" * 61] * 3) + ".io", "a@x.com-", "a@x.-com", "-@x.com",
]  # fmt: skip


def test_the_fast_path_for_usual_addresses_agrees_with_email_validator() -> None:
    """``normalise_email`` decides usual addresses without email-validator's splitting and
    remembers each domain's verdict: on edge cases and on thousands of random addresses
    over the characters it takes, it gives what email-validator gives, messages included."""
    rng = random.Random(13)
    atext = string.ascii_letters + string.digits + "!#$%&'*+/=?^_`{|}~.-"
    dtext = string.ascii_letters + string.digits + ".-"
    domains = ["gmail.com", "x.co.uk", "xn--bcher-kva.de", "localhost", "a.test", "b-.org"]
    randoms = []
    for _ in range(5000):
        local = "".join(rng.choices(atext, k=rng.randint(1, 70)))
        if rng.random() < 0.5:
            domain = rng.choice(domains)
        else:
            domain = "".join(rng.choices(dtext, k=rng.randint(1, 30)))
        randoms.append(f"{local}@{domain}")
    for text in [*EDGES, *randoms]:
        assert _ours(text) == _library(text), text
    valid = sum(not _library(t).startswith("refused") for t in [*EDGES, *randoms])
    assert 1000 < valid < len(EDGES) + len(randoms) - 1000  # both verdicts are exercised


def test_time_zones_must_be_iana_names() -> None:
    assert subs.check_time_zone("Europe/Paris") == "Europe/Paris"
    assert subs.check_time_zone("UTC") == "UTC"
    for bad in ("Mars/Olympus_Mons", "Europe", "../../etc/passwd", "/etc/localtime", ""):
        with pytest.raises(ValueError, match="unknown time zone"):
            subs.check_time_zone(bad)


# -- single subscribers ------------------------------------------------------------------


def test_add_is_idempotent_and_confirm_activates_once(database_url: str) -> None:
    engine = db.engine(database_url)
    first = subs.add(engine, "Ann@Example.org", name="Ann", lists=["weekly"])
    again = subs.add(engine, "ann@example.org", name="Other", lists=["weekly", "offers"])
    assert first == again
    ann = subs.get(engine, " ANN@example.org ")
    assert ann is not None and ann == subs.get(engine, first)
    assert (ann.name, ann.status, ann.lists, ann.confirmed_at) == (
        "Ann",
        "pending",
        ("offers", "weekly"),
        None,
    )
    assert consent.confirm(engine, first) is True
    confirmed = subs.get(engine, first)
    assert confirmed is not None and confirmed.status == "active"
    assert confirmed.confirmed_at is not None and confirmed.confirmed_at.tzinfo is UTC
    assert consent.confirm(engine, first) is False
    with pytest.raises(NotFound):
        consent.confirm(engine, 999_999)
    with pytest.raises(NotFound):
        set_status(engine, 999_999, "bounced")
    assert subs.get(engine, "nobody@example.org") is None


def test_add_checks_its_arguments(sqlite_url: str) -> None:
    engine = db.engine(sqlite_url)
    with pytest.raises(ValueError, match="must have an @-sign"):
        subs.add(engine, "nobody")
    with pytest.raises(ValueError, match="unknown status"):
        subs.add(engine, "a@example.org", status="gone")
    with pytest.raises(ValueError, match="unknown time zone"):
        subs.add(engine, "a@example.org", time_zone="Moon/Base")
    with pytest.raises(ValueError, match="contains ';'"):
        subs.add(engine, "a@example.org", lists=["a;b"])
    with pytest.raises(ValueError, match="subscriber field"):
        subs.add(engine, "a@example.org", attributes={"Status": "x"})
    with pytest.raises(ValueError, match="must be text"):
        subs.add(engine, "a@example.org", attributes={"age": 42})  # type: ignore[dict-item]
    assert subs.count(engine) == 0
    with engine.begin() as conn:
        assert lists.ensure_list(conn, "weekly") == lists.ensure_list(conn, " weekly ")


def test_unsubscribed_bounced_and_complained_are_sticky_against_add(database_url: str) -> None:
    engine = db.engine(database_url)
    ids = {
        status: subs.add(engine, f"{status}@example.org", lists=["weekly"], status="active")
        for status in ("unsubscribed", "bounced", "complained")
    }
    for status, subscriber_id in ids.items():
        set_status(engine, subscriber_id, status)
        assert subs.add(engine, f"{status}@example.org", lists=["offers"]) == subscriber_id
        found = subs.get(engine, subscriber_id)
        assert found is not None and (found.status, found.lists) == (status, ("weekly",))
    assert subs.count(engine, status="unsubscribed") == 1
    assert subs.count(engine, list_name="weekly", status="bounced") == 1
    with pytest.raises(NotFound, match="no list named 'offers' \\(lists: weekly\\)"):
        subs.count(engine, list_name="offers")  # not even created for them


# -- CSV import ---------------------------------------------------------------------------

BOM = b"\xef\xbb\xbf"


def write_csv(path: Path, *lines: str, newline: str = "\r\n", bom: bool = True) -> Path:
    path.write_bytes((BOM if bom else b"") + newline.join(lines).encode() + newline.encode())
    return path


def problems(report: imports.ImportReport) -> list[tuple[int, str]]:
    return [(p.line, p.message) for p in report.problems]


def test_every_bad_row_is_reported_with_its_line_and_the_rest_imported(
    database_url: str, tmp_path: Path
) -> None:
    engine = db.engine(database_url)
    path = write_csv(
        tmp_path / "people.csv",
        "Email,Name,Timezone,Lists,plan,City",  # 1 (after a BOM; CRLF throughout)
        "ann@example.org,Ann,Europe/Paris,weekly;offers,pro,Paris",  # 2
        "not-an-address,Bad,UTC,,,",  # 3
        "bob@example.org,Bob,Mars/Olympus_Mons,,,",  # 4
        "cy@example.org,Cy,UTC,,,,extra",  # 5
        "",  # 6: empty, skipped
        'dee@example.org,"Dee ""DJ""',  # 7
        'Smith",UTC,weekly,free,',  # 8: the quoted name goes on
        "ANN@Example.org,Ann again,UTC,,,",  # 9
        ",,,,,",  # 10: empty, skipped
        "eve@example.org,Eve,,weekly,,Lyon",  # 11
        "fay@example.org,Fay",  # 12
        "gus@example.org,G\x00us,UTC,,,",  # 13
        "hal@example.org," + "x" * 201 + ",UTC,,,",  # 14
        "ivy@example.org,Ivy,UTC,a;" + "l" * 101 + ",,",  # 15
    )
    report = imports.import_csv(engine, path)
    assert problems(report) == [
        (3, "'not-an-address' is not a valid email address: An email address must have an"
            " @-sign."),
        (4, "unknown time zone 'Mars/Olympus_Mons': use an IANA name such as Europe/Paris"),
        (5, "7 fields where the header has 6 (a missing or extra comma, or an unquoted comma"
            " in a value?)"),
        (9, "ann@example.org is repeated: it is already on line 2"),
        (12, "2 fields where the header has 6 (a missing or extra comma, or an unquoted comma"
             " in a value?)"),
        (13, "contains a NUL character: is this really a CSV text file?"),
        (14, "the name is longer than 200 characters"),
        (15, "list name 'llllllllllllllllllll'… is longer than 100 characters"),
    ]  # fmt: skip
    assert all(str(p).startswith(f"{path}:{p.line}: ") for p in report.problems)
    assert (report.rows, report.new, report.updated, report.unchanged) == (11, 3, 0, 0)
    assert report.summary() == "imported 11 rows: 3 new, 0 updated, 0 unchanged; 8 bad rows"
    ann, dee, eve = (subs.get(engine, f"{n}@example.org") for n in ("ann", "dee", "eve"))
    assert ann is not None and dee is not None and eve is not None
    assert (ann.name, ann.time_zone, ann.lists, ann.attributes) == (
        "Ann",
        "Europe/Paris",
        ("offers", "weekly"),
        {"plan": "pro", "City": "Paris"},
    )
    assert ann.status == "active" and ann.confirmed_at == ann.created_at
    assert dee.name == 'Dee "DJ"\r\nSmith' and dee.attributes == {"plan": "free"}
    assert (eve.time_zone, eve.attributes) == ("UTC", {"City": "Lyon"})
    assert subs.count(engine) == 3


def test_a_runaway_quote_is_reported_and_the_rows_after_it_imported(
    sqlite_url: str, tmp_path: Path
) -> None:
    filler = [f"x{n}@example.org,Filler {n}" for n in range(6000)]  # > csv's 128 KiB field
    path = write_csv(
        tmp_path / "quote.csv", "email,name", 'ann@example.org,"Ann', *filler, bom=False
    )
    report = imports.import_csv(db.engine(sqlite_url), path)
    assert problems(report) == [(2, "not valid CSV: field larger than field limit (131072)")]
    assert report.new == subs.count(db.engine(sqlite_url)) > 1000
    assert subs.get(db.engine(sqlite_url), "x5999@example.org") is not None


def test_a_file_that_is_not_utf8_names_the_line_and_imports_nothing(
    database_url: str, tmp_path: Path
) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"email,name\nann@example.org,Ann\nbob@example.org,Jos\xe9\n")
    with pytest.raises(LetterpressError) as caught:
        imports.import_csv(db.engine(database_url), path)
    assert str(caught.value).startswith(f"{path}:3: not UTF-8 (byte 0xe9 at column 20)")
    assert "save the file as UTF-8" in str(caught.value)
    assert subs.count(db.engine(database_url)) == 0


@pytest.mark.parametrize(
    ("content", "says"),
    [
        ("", ":1: the file is empty"),
        ("name,city\nAnn,Paris\n", ":1: the header row has no email column (found: name, city)"),
        ("email,name,Email\n", ":1: the header has two email columns"),
        ("email,time_zone,timezone\n", ":1: the header has two time_zone columns"),
        ("email,plan,plan\n", ":1: the header has two 'plan' columns"),
        ("email,,plan\n", ":1: column 2 of the header has no name"),
        ("\n\nemail,name,\n", ":3: column 3 of the header has no name"),
    ],
)
def test_a_file_without_a_usable_header_imports_nothing(
    sqlite_url: str, tmp_path: Path, content: str, says: str
) -> None:
    path = tmp_path / "people.csv"
    path.write_text(content)
    with pytest.raises(LetterpressError, match=says.replace("(", "\\(").replace(")", "\\)")):
        imports.import_csv(db.engine(sqlite_url), path)


def test_importing_again_changes_nothing_and_changes_only_what_differs(
    database_url: str, tmp_path: Path
) -> None:
    engine = db.engine(database_url)
    header = "email,name,time_zone,lists,plan"
    rows = [f"p{n}@example.org,Person {n},Europe/Berlin,weekly,free" for n in range(50)]
    path = write_csv(tmp_path / "people.csv", header, *rows)
    assert imports.import_csv(engine, path).summary() == (
        "imported 50 rows: 50 new, 0 updated, 0 unchanged; 0 bad rows"
    )
    before = state(engine)
    again = imports.import_csv(engine, path)
    assert (again.new, again.updated, again.unchanged, again.problems) == (0, 0, 50, [])
    assert state(engine) == before
    with engine.connect() as conn:
        updated = conn.execute(sa.select(sa.func.count(sa.distinct(db.subscribers.c.updated_at))))
        assert updated.scalar_one() == 1  # all from the first import: nothing was rewritten

    rows[1] = "p1@example.org,Someone Else,Europe/Berlin,weekly,free"  # a new name
    rows[2] = "p2@example.org,Person 2,Asia/Tokyo,weekly,free"  # a new time zone
    rows[3] = "p3@example.org,Person 3,Europe/Berlin,weekly;offers,free"  # one more list
    rows[4] = "p4@example.org,Person 4,Europe/Berlin,weekly,pro"  # a new attribute value
    rows[5] = "p5@example.org,,,,"  # empty cells never erase what is known
    changed = imports.import_csv(engine, write_csv(tmp_path / "changed.csv", header, *rows))
    assert (changed.new, changed.updated, changed.unchanged) == (0, 4, 46)
    after = state(engine)
    assert after["p1@example.org"][0] == "Someone Else"
    assert after["p2@example.org"][2] == "Asia/Tokyo"
    assert after["p3@example.org"][4] == ("offers", "weekly")
    assert after["p4@example.org"][3] == {"plan": "pro"}
    assert after["p5@example.org"] == before["p5@example.org"]
    assert {
        k: v for k, v in after.items() if k not in {f"p{n}@example.org" for n in range(1, 5)}
    } == {k: v for k, v in before.items() if k not in {f"p{n}@example.org" for n in range(1, 5)}}


def test_unsubscribed_bounced_and_complained_are_never_reactivated_by_an_import(
    database_url: str, tmp_path: Path
) -> None:
    engine = db.engine(database_url)
    header = "email,name,lists"
    rows = ["un@example.org,Un,weekly", "bo@example.org,Bo,weekly", "co@example.org,Co,weekly"]
    imports.import_csv(engine, write_csv(tmp_path / "a.csv", header, *rows))
    for address, status in (("un", "unsubscribed"), ("bo", "bounced"), ("co", "complained")):
        found = subs.get(engine, f"{address}@example.org")
        assert found is not None
        set_status(engine, found.id, status)
    pending = subs.add(engine, "pe@example.org", lists=["weekly"])  # signed up, unconfirmed
    rows = [r.replace(",weekly", ",weekly;offers").replace(",Un,", ",New Name,") for r in rows]
    report = imports.import_csv(
        engine, write_csv(tmp_path / "b.csv", header, *rows, "pe@example.org,Pe,weekly")
    )
    assert report.summary() == (
        "imported 4 rows: 0 new, 1 updated, 0 unchanged, 1 kept bounced, 1 kept complained,"
        " 1 kept unsubscribed; 0 bad rows"
    )
    un = subs.get(engine, "un@example.org")
    assert un is not None and (un.status, un.name, un.lists) == ("unsubscribed", "Un", ("weekly",))
    with pytest.raises(NotFound):
        subs.count(engine, list_name="offers")  # nobody could be put on it
    assert subs.count(engine, status="active") == 1
    pe = subs.get(engine, pending)
    assert pe is not None and pe.status == "active" and pe.confirmed_at is not None


def test_a_status_column_opts_people_out_but_never_demotes_to_pending(
    database_url: str, tmp_path: Path
) -> None:
    engine = db.engine(database_url)
    imports.import_csv(engine, write_csv(tmp_path / "a.csv", "email", "a@example.org", "b@x.org"))
    report = imports.import_csv(
        engine,
        write_csv(
            tmp_path / "b.csv",
            "email,status",
            "a@example.org,Unsubscribed",
            "b@x.org,pending",
            "c@example.org,bounced",
            "d@example.org,gone",
        ),
    )
    assert problems(report) == [
        (5, "unknown status 'gone': use one of pending, active, unsubscribed, bounced, complained")
    ]
    assert (report.new, report.updated, report.unchanged) == (1, 1, 1)
    statuses = {s.email: s.status for s in map(lambda e: subs.get(engine, e), ["a@example.org", "b@x.org", "c@example.org"]) if s}  # fmt: skip
    assert statuses == {"a@example.org": "unsubscribed", "b@x.org": "active",
                        "c@example.org": "bounced"}  # fmt: skip
    c = subs.get(engine, "c@example.org")
    assert c is not None and c.confirmed_at is None  # nobody confirmed a bounced address


def test_imported_memberships_say_who_gets_sends_as_the_trigger_would(
    database_url: str, tmp_path: Path
) -> None:
    """The import writes each membership's ``recipient`` itself, so no trigger runs for
    it: the flag must still be what migration 0005's definition gives (an active,
    confirmed subscriber), for new and existing subscribers, before and after a change."""
    engine = db.engine(database_url)
    subs.add(engine, "waiting@example.org", lists=["weekly"])  # pending, unconfirmed
    subs.add(engine, "left@example.org")
    set_status(engine, subs.get(engine, "left@example.org").id, "unsubscribed")  # type: ignore[union-attr]
    first = ["email,status,lists", "new@example.org,,weekly;offers", "pend@example.org,pending,weekly",
             "hold@example.org,pending,weekly",
             "gone@example.org,unsubscribed,weekly", "waiting@example.org,,offers",
             "left@example.org,,weekly"]  # fmt: skip
    imports.import_csv(engine, write_csv(tmp_path / "a.csv", *first))
    # ...and a second file: most of it new, so it is inserted before any lookup, with
    # one address that is already there among them
    second = ["email,lists", *(f"more{n}@example.org,events" for n in range(30)),
              "pend@example.org,events"]  # fmt: skip
    imports.import_csv(engine, write_csv(tmp_path / "b.csv", *second))
    s, m = db.subscribers.c, db.memberships.c
    expected = sa.and_(s.status == "active", s.confirmed_at.is_not(None))
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(s.email, db.lists.c.name, m.recipient, expected)
            .join(db.memberships, m.subscriber_id == s.id)
            .join(db.lists, db.lists.c.id == m.list_id)
        ).all()
    flags = {(email, name): bool(recipient) for email, name, recipient, _ in rows}
    assert all(bool(recipient) == bool(should) for *_, recipient, should in rows), rows
    assert flags == {
        ("new@example.org", "weekly"): True, ("new@example.org", "offers"): True,
        ("hold@example.org", "weekly"): False,
        # the second file's people are active (consented elsewhere): pend@ is activated
        ("pend@example.org", "weekly"): True, ("pend@example.org", "events"): True,
        ("gone@example.org", "weekly"): False,
        ("waiting@example.org", "weekly"): True, ("waiting@example.org", "offers"): True,
        **{(f"more{n}@example.org", "events"): True for n in range(30)},
    }  # fmt: skip


def test_list_option_puts_everyone_imported_on_the_list(database_url: str, tmp_path: Path) -> None:
    engine = db.engine(database_url)
    subs.add(engine, "gone@example.org", status="active")
    gone = subs.get(engine, "gone@example.org")
    assert gone is not None
    set_status(engine, gone.id, "unsubscribed")
    path = write_csv(tmp_path / "a.csv", "email,lists", "a@example.org,", "b@example.org,other",
                     "gone@example.org,")  # fmt: skip
    report = imports.import_csv(engine, path, list_name="spring-sale")
    assert (report.new, report.kept["unsubscribed"]) == (2, 1)
    assert subs.count(engine, list_name="spring-sale") == 2
    assert subs.count(engine, list_name="other") == 1
    with pytest.raises(ValueError, match="contains ';'"):
        imports.import_csv(engine, path, list_name="a;b")


def test_large_import_in_worker_processes_finds_repeats_across_batches(
    database_url: str, tmp_path: Path
) -> None:
    engine = db.engine(database_url)
    count = imports.WRITE_ROWS + 2000  # two write batches, six validation chunks
    rows = [f"user{n}@example.org,User {n},UTC,weekly,{n % 3}" for n in range(count)]
    rows[count - 5] = "USER7@example.org,Again,UTC,,"  # repeats line 9, one batch later
    rows[count - 4] = "broken"
    path = write_csv(tmp_path / "big.csv", "email,name,time_zone,lists,tier", *rows)
    seen: list[int] = []
    report = imports.import_csv(engine, path, progress=seen.append, processes=2)
    assert problems(report) == [
        (count - 3, "user7@example.org is repeated: it is already on line 9"),
        (count - 2, "1 fields where the header has 5 (a missing or extra comma, or an"
                    " unquoted comma in a value?)"),
    ]  # fmt: skip
    assert report.new == count - 2 == subs.count(engine, list_name="weekly")
    assert seen == sorted(seen) and seen[-1] == count
    with engine.connect() as conn:
        ids = conn.execute(sa.select(db.subscribers.c.email).order_by(db.subscribers.c.id))
        emails = ids.scalars().all()
    assert emails[:3] == ["user0@example.org", "user1@example.org", "user2@example.org"]
    assert emails[-1] == f"user{count - 1}@example.org"  # ids follow the file


# -- CSV export ---------------------------------------------------------------------------


def state(engine: sa.Engine) -> dict[str, tuple[object, ...]]:
    """Everything an export carries, by address."""
    result: dict[str, tuple[object, ...]] = {}
    with engine.connect() as conn:
        emails = conn.execute(sa.select(db.subscribers.c.email)).scalars().all()
    for email in emails:
        s = subs.get(engine, email)
        assert s is not None
        result[email] = (s.name, s.status, s.time_zone, s.attributes, s.lists, s.created_at,
                         s.confirmed_at)  # fmt: skip
    return result


def fresh(url: str, tmp_path: Path) -> str:
    """An empty, migrated database of the same kind."""
    if url.startswith("sqlite"):
        url = f"sqlite:///{tmp_path / 'second.db'}"
    else:
        with db.engine(url).begin() as conn:
            conn.exec_driver_sql("DROP SCHEMA public CASCADE")
            conn.exec_driver_sql("CREATE SCHEMA public")
    db.upgrade(url)
    return url


def test_an_export_imports_back_into_the_same_state(database_url: str, tmp_path: Path) -> None:
    engine = db.engine(database_url)
    subs.add(engine, "ann@example.org", name="Ann, Jr.", lists=["weekly", "offers"],
             status="active", time_zone="Europe/Paris", attributes={"plan": "pro", "city": ""})  # fmt: skip
    subs.add(engine, "bo@example.org", name='Bo "the" Boss\nLine two', lists=["weekly"],
             attributes={"Company": "Bo, Inc.", "note": "émoji 🎉"})  # fmt: skip
    subs.add(engine, "cy@example.org", status="active", lists=["offers"])
    gone = subs.add(engine, "gone@example.org", status="active", lists=["weekly"])
    set_status(engine, gone, "complained")
    subs.add(engine, "nolists@example.org", name="Nobody")
    subs.add(engine, "=1+x@example.org", name='=HYPERLINK("http://evil.example/")',
             attributes={"@cmd": "+1", "note": "'-2"})  # fmt: skip
    path = write_csv(tmp_path / "more.csv", "email,name,tier", "dee@example.org,Dee,gold")
    imports.import_csv(engine, path)
    before = state(engine)

    out = io.StringIO()
    assert exports.export_csv(engine, out) == 7
    exported = out.getvalue()
    assert exported.splitlines()[0] == (
        "email,name,status,time_zone,lists,created_at,confirmed_at,'@cmd,Company,note,plan,tier"
    )
    # Spreadsheets read no formula in it (OWASP CSV injection): such cells start with '.
    formula = next(line for line in exported.splitlines() if "HYPERLINK" in line)
    assert formula.startswith("'=1+x@example.org,\"'=HYPERLINK(")
    assert ",'+1," in formula and ",''-2," in formula
    second = db.engine(fresh(database_url, tmp_path))
    (tmp_path / "export.csv").write_text(exported, encoding="utf-8", newline="")
    report = imports.import_csv(second, tmp_path / "export.csv")
    assert (report.new, report.problems) == (7, [])
    assert state(second) == before
    again = io.StringIO()
    exports.export_csv(second, again)
    assert again.getvalue() == exported
    assert imports.import_csv(second, tmp_path / "export.csv").unchanged == 6  # + 1 kept


def test_export_selects_by_list_and_status(database_url: str) -> None:
    engine = db.engine(database_url)
    subs.add(engine, "a@example.org", lists=["weekly"], status="active")
    subs.add(engine, "b@example.org", lists=["weekly", "offers"])
    subs.add(engine, "c@example.org", lists=["offers"], attributes={"plan": "pro"})
    out = io.StringIO()
    assert exports.export_csv(engine, out, list_name="weekly", status="pending") == 1
    lines = out.getvalue().splitlines()
    assert lines[0] == "email,name,status,time_zone,lists,created_at,confirmed_at"
    assert lines[1].startswith("b@example.org,,pending,UTC,offers;weekly,")
    out = io.StringIO()
    assert exports.export_csv(engine, out, list_name="offers") == 2
    assert out.getvalue().splitlines()[0].endswith(",confirmed_at,plan")
    with pytest.raises(NotFound, match="no list named 'daily'"):
        exports.export_csv(engine, io.StringIO(), list_name="daily")


# -- the command line ---------------------------------------------------------------------


def invoke(url: str, tmp_path: Path, *args: str) -> Result:
    config = tmp_path / "empty.toml"
    config.write_text("")
    return CliRunner().invoke(cli, list(args), obj=Context(config), env={"DATABASE_URL": url})


def test_cli_import_reports_bad_rows_and_exits_1(database_url: str, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "people.csv", "email,name", "ann@example.org,Ann",
                     "nobody,No One", "bo@example.org,Bo")  # fmt: skip
    result = invoke(database_url, tmp_path, "import", str(path), "--list", "weekly")
    assert result.exit_code == 1, result.output
    assert result.stdout == "imported 3 rows: 2 new, 0 updated, 0 unchanged; 1 bad row\n"
    assert result.stderr == (
        f"{path}:3: 'nobody' is not a valid email address: An email address must have an @-sign.\n"
    )
    clean = write_csv(tmp_path / "clean.csv", "email", "cy@example.org")
    result = invoke(database_url, tmp_path, "import", str(clean))
    assert (result.exit_code, result.stderr) == (0, "")
    assert invoke(database_url, tmp_path, "count", "--list", "weekly").stdout == "2\n"
    assert invoke(database_url, tmp_path, "count").stdout == "3\n"


def test_cli_shows_a_progress_bar_for_large_files(sqlite_url: str, tmp_path: Path) -> None:
    rows = [f"reader{n}@example.org,Reader {n},Europe/London" for n in range(25_000)]
    path = write_csv(tmp_path / "big.csv", "email,name,time_zone", *rows)
    assert path.stat().st_size >= 1_000_000
    result = invoke(sqlite_url, tmp_path, "import", str(path))
    assert result.exit_code == 0, result.output
    assert "importing big.csv" in result.stderr  # click's bar, on stderr
    assert result.stdout == "imported 25,000 rows: 25,000 new, 0 updated, 0 unchanged; 0 bad rows\n"


def test_cli_add_count_and_export(database_url: str, tmp_path: Path) -> None:
    result = invoke(database_url, tmp_path, "add", "Ann@Example.org", "--name", "Ann",
                    "--list", "weekly", "--status", "active")  # fmt: skip
    assert (result.exit_code, result.stdout) == (
        0,
        "added: ann@example.org (id 1, active, lists: weekly)\n",
    )
    result = invoke(database_url, tmp_path, "add", "ann@example.org", "--list", "offers")
    assert (
        result.stdout
        == "already subscribed: ann@example.org (id 1, active, lists: offers, weekly)\n"
    )
    result = invoke(database_url, tmp_path, "add", "not-an-address")
    assert result.exit_code == 2 and "Invalid value for 'EMAIL'" in result.stderr
    result = invoke(database_url, tmp_path, "add", "b@example.org", "--list", "a;b")
    assert result.exit_code == 2 and "contains ';'" in result.stderr
    assert invoke(database_url, tmp_path, "count", "--status", "pending").stdout == "0\n"
    result = invoke(database_url, tmp_path, "count", "--list", "nope")
    assert (result.exit_code, result.stderr) == (
        1,
        "error: no list named 'nope' (lists: offers, weekly)\n",
    )

    result = invoke(database_url, tmp_path, "export")
    assert result.exit_code == 0
    assert result.stdout.startswith("email,name,status,time_zone,lists,created_at,confirmed_at\n"
                                    "ann@example.org,Ann,active,UTC,offers;weekly,")  # fmt: skip
    assert result.stderr == "exported 1 subscriber\n"
    out = tmp_path / "export.csv"
    result = invoke(database_url, tmp_path, "export", "--out", str(out), "--status", "active")
    assert result.stderr == f"exported 1 subscriber to {out}\n"
    assert out.read_text(encoding="utf-8").splitlines()[1].startswith("ann@example.org,")
    assert not list(tmp_path.glob(".*.partial"))


def test_cli_asks_for_the_migration_on_an_unmigrated_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'new.db'}"
    path = write_csv(tmp_path / "a.csv", "email", "ann@example.org")
    for args in (["import", str(path)], ["export"], ["add", "ann@example.org"], ["count"]):
        result = invoke(url, tmp_path, *args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr.startswith("error: the database ")
        assert "is at migration none" in result.stderr
        assert result.stderr.endswith("run `letterpress db upgrade`\n")


def test_times_from_a_file_are_kept_and_read_as_utc_without_an_offset(
    sqlite_url: str, tmp_path: Path
) -> None:
    engine = db.engine(sqlite_url)
    path = write_csv(
        tmp_path / "times.csv",
        "email,created_at,confirmed_at",
        "a@example.org,2024-05-01T09:30:00+02:00,2024-05-02 10:00:00",
        "b@example.org,yesterday,",
    )
    report = imports.import_csv(engine, path)
    assert problems(report) == [
        (3, "'yesterday' is not an ISO 8601 time (2024-05-01T09:30:00+00:00)")
    ]
    a = subs.get(engine, "a@example.org")
    assert a is not None
    assert a.created_at == datetime(2024, 5, 1, 7, 30, tzinfo=UTC)
    assert a.confirmed_at == datetime(2024, 5, 2, 10, 0, tzinfo=UTC)
