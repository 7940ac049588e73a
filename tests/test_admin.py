"""The admin API end to end: ``letterpress serve`` in its own process, on SQLite and on
PostgreSQL, driven over HTTP with the admin token. One service per database serves the
whole module; every test works on addresses, lists and issues of its own."""

from __future__ import annotations

import contextlib
import csv
import io
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa
from click.testing import CliRunner

from pipeline.audience import changes, exports, lists
from pipeline.audience import subscribers as subs
from pipeline.cli.common import Context
from pipeline.cli.main import main as cli
from pipeline.cli.subscribers import subscribers as subscribers_cli
from pipeline.sending import issues
from pipeline.sending.parts import SendingParts
from pipeline.statuses import Role
from pipeline.store import db
from tests.cluster import wait_for
from tests.conftest import CONTENT, SEEDS, postgres_database
from tests.service import ADMIN_TOKEN, SECRET, RunningService, running_service

API = "/api/admin"
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


@dataclass
class Admin:
    """The running service, and a session that sends the admin token."""

    svc: RunningService
    session: requests.Session
    redis_url: str

    @property
    def engine(self) -> sa.Engine:
        return self.svc.engine

    def url(self, path: str) -> str:
        return f"{self.svc.url}{API}{path}"

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.session.get(self.url(path), timeout=30, **kwargs)

    def post(self, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        return self.session.post(self.url(path), json=body, timeout=30, **kwargs)

    def patch(self, path: str, body: Any, **kwargs: Any) -> requests.Response:
        return self.session.patch(self.url(path), json=body, timeout=30, **kwargs)

    def delete(self, path: str) -> requests.Response:
        return self.session.delete(self.url(path), timeout=30)

    def add(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("email", address())
        answer = self.post("/subscribers", fields)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def issue(self, **fields: Any) -> dict[str, Any]:
        fields.setdefault("subject", "Vitamin K2")
        fields.setdefault("articles", [SEEDS[0], f"{SEEDS[1]}:teaser"])
        answer = self.post("/issues", fields)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())


def unique(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:10]}"


def address(tag: str = "sub") -> str:
    return f"{unique(tag)}@example.org"


def refused(answer: requests.Response, status: int, says: str = "") -> str:
    """The answer's detail, once it is ``status`` and mentions ``says``."""
    assert answer.status_code == status, (answer.status_code, answer.text)
    detail = answer.json()["detail"]
    text = detail if isinstance(detail, str) else "; ".join(p["problem"] for p in detail)
    assert says in text, text
    return str(text)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def admin(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, redis_url: str
) -> Iterator[Admin]:
    tmp = tmp_path_factory.mktemp(f"admin-{request.param}")
    with contextlib.ExitStack() as stack:
        if request.param == "sqlite":
            url = f"sqlite:///{tmp / 'letterpress.db'}"
        else:
            url = stack.enter_context(postgres_database("admin"))
        settings = {"content_dir": str(CONTENT)}
        svc = stack.enter_context(running_service(tmp, url, redis_url, settings=settings))
        s = stack.enter_context(requests.Session())
        s.headers["authorization"] = f"Bearer {ADMIN_TOKEN}"
        yield Admin(svc, s, redis_url)


# -- authentication and the schema ------------------------------------------------------------


def test_every_request_needs_the_admin_token(admin: Admin) -> None:
    requests_to_make = [
        ("GET", "/subscribers", None),
        ("POST", "/subscribers", {"email": address()}),
        ("GET", "/subscribers.csv", None),
        ("PATCH", "/subscribers/1", {"name": "x"}),
        ("DELETE", "/subscribers/1", None),
        ("GET", "/issues", None),
        ("POST", "/issues", {"subject": "x", "articles": [SEEDS[0]]}),
        ("POST", "/issues/1/cancel", None),
        ("GET", "/issues/1/clicks", None),
        ("POST", "/subscribers", {"not": "even valid"}),  # 401 before any validation
    ]
    wrong = [
        {},
        {"authorization": "Bearer not-the-token"},
        {"authorization": f"Bearer {ADMIN_TOKEN}x"},
        {"authorization": f"Basic {ADMIN_TOKEN}"},
        {"authorization": ADMIN_TOKEN},
    ]
    for method, path, body in requests_to_make:
        for headers in wrong:
            answer = requests.request(
                method, admin.url(path), json=body, headers=headers, timeout=30
            )
            refused(answer, 401, "admin token")
            assert answer.headers["www-authenticate"] == "Bearer"
    assert not admin.get(f"/subscribers?email={address()}").json()["items"]  # nothing was made
    right = requests.get(
        admin.url("/issues"), headers={"authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30
    )
    assert right.status_code == 200


def test_without_a_token_setting_the_api_is_off(
    tmp_path: Path, sqlite_url: str, redis_url: str
) -> None:
    with running_service(
        tmp_path, sqlite_url, redis_url, env={"LETTERPRESS_ADMIN_TOKEN": ""}
    ) as svc:
        for headers in (
            {},
            {"authorization": f"Bearer {ADMIN_TOKEN}"},
            {"authorization": "Bearer"},
        ):
            answer = requests.get(f"{svc.url}{API}/subscribers", headers=headers, timeout=30)
            refused(answer, 403, "set LETTERPRESS_ADMIN_TOKEN")
        assert requests.get(f"{svc.url}/healthz", timeout=30).status_code == 200


def _unbounded(spec: dict[str, Any], schema: dict[str, Any], where: str) -> list[str]:
    """The places in a request schema where a string or a list has no upper bound."""
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    found = []
    for part in schema.get("anyOf", []) + schema.get("allOf", []) + schema.get("oneOf", []):
        found += _unbounded(spec, part, where)
    kind = schema.get("type")
    if kind == "string" and "maxLength" not in schema:
        found.append(where)
    if kind == "array":
        if "maxItems" not in schema:
            found.append(f"{where}[]")
        found += _unbounded(spec, schema.get("items", {}), f"{where}[]")
    if kind == "object":
        for name, part in schema.get("properties", {}).items():
            found += _unbounded(spec, part, f"{where}.{name}")
        values = schema.get("additionalProperties")
        if isinstance(values, dict):
            if "maxProperties" not in schema:
                found.append(f"{where}{{}}")
            if "maxLength" not in schema.get("propertyNames", {}):
                found.append(f"{where}{{key}}")
            found += _unbounded(spec, values, f"{where}{{}}")
    return found


def test_the_schema_declares_the_token_and_bounds_every_input(admin: Admin) -> None:
    spec = requests.get(f"{admin.svc.url}/openapi.json", timeout=30).json()
    assert spec["components"]["securitySchemes"]["AdminToken"] == {
        "type": "http",
        "scheme": "bearer",
        "description": "The value of the setting admin_token (LETTERPRESS_ADMIN_TOKEN).",
    }
    operations = {
        (method.upper(), path): operation
        for path, item in spec["paths"].items()
        if path.startswith(API)
        for method, operation in item.items()
    }
    assert set(operations) == {
        ("GET", f"{API}/subscribers"),
        ("POST", f"{API}/subscribers"),
        ("GET", f"{API}/subscribers.csv"),
        ("GET", f"{API}/subscribers/{{subscriber_id}}"),
        ("PATCH", f"{API}/subscribers/{{subscriber_id}}"),
        ("DELETE", f"{API}/subscribers/{{subscriber_id}}"),
        ("GET", f"{API}/issues"),
        ("POST", f"{API}/issues"),
        ("GET", f"{API}/issues/{{issue_id}}"),
        ("POST", f"{API}/issues/{{issue_id}}/schedule"),
        ("POST", f"{API}/issues/{{issue_id}}/pause"),
        ("POST", f"{API}/issues/{{issue_id}}/resume"),
        ("POST", f"{API}/issues/{{issue_id}}/cancel"),
        ("POST", f"{API}/issues/{{issue_id}}/retry-failed"),
        ("GET", f"{API}/issues/{{issue_id}}/clicks"),
    }
    for (method, path), operation in operations.items():
        assert operation["security"] == [{"AdminToken": []}], (method, path)
        assert operation["tags"] == ["admin"]
        unauthorised = operation["responses"]["401"]
        assert "WWW-Authenticate" in unauthorised["headers"]
        problems = []
        for parameter in operation.get("parameters", []):
            problems += _unbounded(spec, parameter["schema"], parameter["name"])
            if parameter["schema"].get("type") == "integer":
                assert "maximum" in parameter["schema"], (method, path, parameter)
        body = operation.get("requestBody")
        if body:
            problems += _unbounded(spec, body["content"]["application/json"]["schema"], "body")
        assert problems == [], (method, path)


# -- subscribers ----------------------------------------------------------------------------


def test_add_a_subscriber_and_read_it_back(admin: Admin) -> None:
    email = address("ann")
    list_name = unique("list")
    answer = admin.post(
        "/subscribers",
        {
            "email": f"  {email.upper()} ",
            "name": "  Ann   Lee ",
            "lists": [list_name, list_name],
            "time_zone": "Europe/Paris",
            "attributes": {"plan": "gold"},
        },
    )
    assert answer.status_code == 201, answer.text
    added = answer.json()
    assert answer.headers["location"] == f"{API}/subscribers/{added['id']}"
    assert added["email"] == email
    assert added["name"] == "Ann Lee"
    assert added["status"] == "active"  # they consented elsewhere
    assert added["confirmed_at"] is not None
    assert added["lists"] == [list_name]
    assert added["time_zone"] == "Europe/Paris"
    assert added["attributes"] == {"plan": "gold"}
    assert (added["paused"], added["soft_bounces"]) == (False, 0)
    assert [(e["kind"], e["detail"]) for e in added["events"]] == [
        ("added", f"admin API, active; lists: {list_name}")
    ]
    again = admin.get(answer.headers["location"].removeprefix(API))
    assert again.status_code == 200
    assert again.json() == added
    stored = subs.get(admin.engine, email)
    assert stored is not None and stored.lists == (list_name,)

    pending = admin.add(status="pending")
    assert (pending["status"], pending["confirmed_at"]) == ("pending", None)

    duplicate = admin.post("/subscribers", {"email": email.upper(), "lists": [unique("other")]})
    refused(duplicate, 409, f"already subscriber {added['id']}")
    assert admin.get(f"/subscribers/{added['id']}").json()["lists"] == [list_name]


def test_adding_refuses_bad_values(admin: Admin) -> None:
    for body, says in [
        ({"email": "not-an-address"}, "not a valid email address"),
        ({"email": "   "}, "the email address is empty"),
        ({"email": "ann@@example.org"}, "not a valid email address"),
        ({"email": address(), "name": "Ann\x1b[31m"}, "control characters"),
        ({"email": address(), "lists": ["a;b"]}, "contains ';'"),
        ({"email": address(), "lists": ["  "]}, "a list name is empty"),
        ({"email": address(), "lists": ["nul\x00"]}, "control characters"),
        ({"email": address(), "status": "gone"}, "use one of pending, active"),
        ({"email": address(), "time_zone": "Mars/Olympus"}, "unknown time zone"),
        ({"email": address(), "attributes": {"email": "x"}}, "is a subscriber field"),
        ({"email": address(), "attributes": {"a": "b\x00"}}, "control characters"),
    ]:
        refused(admin.post("/subscribers", body), 400, says)
    for body, where in [
        ({}, "body.email"),
        ({"email": address(), "colour": "red"}, "body.colour"),
        ({"email": "a" * 321}, "body.email"),
        ({"email": address(), "name": "n" * 201}, "body.name"),
        ({"email": address(), "lists": [f"l{i}" for i in range(21)]}, "body.lists"),
        ({"email": address(), "lists": ["l" * 101]}, "body.lists.0"),
        ({"email": address(), "attributes": {"a": 1}}, "body.attributes.a"),
        ({"email": address(), "status": None}, "body.status"),
    ]:
        answer = admin.post("/subscribers", body)
        assert answer.status_code == 422, answer.text
        assert where in [p["where"] for p in answer.json()["detail"]]
    assert admin.post("/subscribers", data=b"{not json").status_code == 422


def test_patch_changes_only_what_is_given(admin: Admin) -> None:
    first, second, third = unique("a"), unique("b"), unique("c")
    added = admin.add(name="Bea", status="pending", lists=[first, second])
    path = f"/subscribers/{added['id']}"

    same = admin.patch(path, {})
    assert same.status_code == 200
    assert same.json() == added  # nothing changed, no event

    answer = admin.patch(
        path,
        {
            "name": "Bea Quinn",
            "status": "active",
            "paused": True,
            "time_zone": "America/New_York",
            "add_lists": [third],
            "remove_lists": [first],
        },
    )
    assert answer.status_code == 200, answer.text
    changed = answer.json()
    assert changed["name"] == "Bea Quinn"
    assert changed["status"] == "active"
    assert changed["confirmed_at"] is not None
    assert changed["status_changed_at"] is not None
    assert changed["paused"] is True
    assert changed["time_zone"] == "America/New_York"
    assert changed["lists"] == sorted([second, third])
    assert changed["events"][0]["kind"] == "changed"
    assert changed["events"][0]["detail"] == (
        f"admin API: name changed; status pending -> active; paused; time zone"
        f" America/New_York; joined {third}; left {first}"
    )
    with admin.engine.connect() as conn:
        paused = conn.scalar(
            sa.select(db.subscribers.c.paused).where(db.subscribers.c.id == added["id"])
        )
    assert paused is True

    unsubscribed = admin.patch(path, {"status": "unsubscribed", "paused": False}).json()
    assert (unsubscribed["status"], unsubscribed["paused"]) == ("unsubscribed", False)
    assert unsubscribed["confirmed_at"] == changed["confirmed_at"]

    refused(admin.patch(path, {"remove_lists": [unique("nope")]}), 400, "no list named")
    refused(admin.patch(path, {"add_lists": [first], "remove_lists": [first]}), 400, "both")
    refused(admin.patch(path, {"status": "gone"}), 400, "unknown status")
    refused(admin.patch(path, {"name": "bell\x07"}), 400, "control characters")
    refused(admin.patch(path, {"time_zone": "Nowhere/Town"}), 400, "unknown time zone")
    # A refused change changes nothing, not even the lists added before the refusal.
    refused(admin.patch(path, {"add_lists": [unique("d")], "remove_lists": [unique("x")]}), 400)
    assert admin.get(path).json()["lists"] == sorted([second, third])
    refused(admin.patch(path, {"email": "new@example.org"}), 422)
    refused(admin.patch(path, {"paused": "sometimes"}), 422)
    refused(admin.patch("/subscribers/999999999", {"name": "x"}), 404, "no subscriber")


def _cli(admin: Admin, tmp_path: Path, *args: str) -> str:
    """``letterpress subscribers ARGS`` on the service's database; its output."""
    config = tmp_path / "empty.toml"
    config.write_text("")
    result = CliRunner().invoke(
        subscribers_cli,
        list(args),
        obj=Context(config),
        env={"DATABASE_URL": admin.svc.settings.database_url},
    )
    assert result.exit_code == 0, result.output
    return result.stdout


def _events(admin: Admin, subscriber_id: int, via: str) -> list[tuple[str, str]]:
    """The subscriber's events, oldest first, with the edge that made each one as VIA."""
    events = admin.get(f"/subscribers/{subscriber_id}").json()["events"]
    return [(e["kind"], e["detail"].replace(via, "VIA", 1)) for e in reversed(events)]


def test_the_admin_api_and_the_command_line_record_the_same_event(
    admin: Admin, tmp_path: Path
) -> None:
    weekly, offers = unique("weekly"), unique("offers")
    by_api = admin.add(email=address("api"), name="Ann", lists=[weekly])["id"]
    email = address("cli")
    _cli(admin, tmp_path, "add", email, "--name", "Ann", "--list", weekly, "--status", "active")
    found = subs.get(admin.engine, email)
    assert found is not None
    by_cli = found.id
    added = [("added", f"VIA, active; lists: {weekly}")]
    assert _events(admin, by_api, changes.ADMIN_API) == added
    assert _events(admin, by_cli, changes.COMMAND_LINE) == added

    # Joining a list: the admin API's PATCH, the command line's add of a known address.
    admin.patch(f"/subscribers/{by_api}", {"add_lists": [offers]}).raise_for_status()
    assert "already subscribed" in _cli(admin, tmp_path, "add", email, "--list", offers)
    joined = [*added, ("changed", f"VIA: joined {offers}")]
    assert _events(admin, by_api, changes.ADMIN_API) == joined
    assert _events(admin, by_cli, changes.COMMAND_LINE) == joined

    # Nothing changes, nothing is recorded, by either.
    admin.patch(f"/subscribers/{by_api}", {"add_lists": [offers]}).raise_for_status()
    _cli(admin, tmp_path, "add", email, "--list", offers)
    assert _events(admin, by_api, changes.ADMIN_API) == joined
    assert _events(admin, by_cli, changes.COMMAND_LINE) == joined


def test_delete_erases_the_subscriber(admin: Admin) -> None:
    added = admin.add(lists=[unique("list")])
    path = f"/subscribers/{added['id']}"
    answer = admin.delete(path)
    assert answer.status_code == 204
    assert answer.content == b""
    refused(admin.get(path), 404, f"no subscriber with id {added['id']}")
    refused(admin.delete(path), 404)
    with admin.engine.connect() as conn:
        events = conn.scalar(
            sa.select(sa.func.count()).where(db.subscriber_events.c.subscriber_id == added["id"])
        )
        members = conn.scalar(
            sa.select(sa.func.count()).where(db.memberships.c.subscriber_id == added["id"])
        )
    assert (events, members) == (0, 0)
    refused(admin.get("/subscribers/0"), 422)
    refused(admin.get(f"/subscribers/{2**63}"), 422)
    refused(admin.get("/subscribers/abc"), 422)


def test_list_pages_through_subscribers_in_id_order(admin: Admin) -> None:
    list_name = unique("page")
    ids = [admin.add(lists=[list_name])["id"] for _ in range(4)]
    pending = admin.add(lists=[list_name], status="pending")
    ids.append(pending["id"])
    admin.add()  # on no list

    seen, after, pages = [], 0, 0
    while True:
        answer = admin.get("/subscribers", params={"list": list_name, "limit": 2, "after": after})
        assert answer.status_code == 200, answer.text
        page = answer.json()
        seen += [item["id"] for item in page["items"]]
        pages += 1
        assert all(item["lists"] == [list_name] for item in page["items"])
        if page["next"] is None:
            break
        assert page["next"] == page["items"][-1]["id"]
        after = page["next"]
    assert seen == sorted(ids)
    assert pages == 3

    only = admin.get("/subscribers", params={"list": list_name, "status": "pending"}).json()
    assert [item["id"] for item in only["items"]] == [pending["id"]]
    assert only["next"] is None
    found = admin.get("/subscribers", params={"email": f" {pending['email'].upper()}"}).json()
    assert [item["id"] for item in found["items"]] == [pending["id"]]
    everyone = admin.get("/subscribers", params={"after": min(ids) - 1, "limit": 500}).json()
    assert set(ids) <= {item["id"] for item in everyone["items"]}

    refused(admin.get("/subscribers", params={"list": unique("none")}), 400, "no list named")
    refused(admin.get("/subscribers", params={"list": "a;b"}), 400, "contains ';'")
    refused(admin.get("/subscribers", params={"status": "gone"}), 400, "unknown status")
    refused(admin.get("/subscribers", params={"email": "nobody"}), 400, "not a valid email")
    for params in ({"limit": 0}, {"limit": 501}, {"after": -1}, {"after": 2**63}):
        refused(admin.get("/subscribers", params=params), 422)


# -- the CSV export ---------------------------------------------------------------------------


def _insert_subscribers(engine: sa.Engine, list_name: str, count: int) -> None:
    """``count`` active subscribers on ``list_name``, written directly (quicker than the API)."""
    now = db.now()
    tag = uuid.uuid4().hex[:10]
    with engine.begin() as conn:
        list_id = lists.ensure_list(conn, list_name)
        rows = [
            {
                "email": f"bulk-{tag}-{n}@example.org",
                "name": f"Bulk Reader {n}",
                "status": "active",
                "time_zone": "UTC",
                "attributes": {"source": "bulk", "n": str(n)},
                "created_at": now,
                "confirmed_at": now,
                "updated_at": now,
            }
            for n in range(count)
        ]
        conn.execute(sa.insert(db.subscribers), rows)
        new = conn.scalars(
            sa.select(db.subscribers.c.id).where(db.subscribers.c.email.like(f"bulk-{tag}-%"))
        ).all()
        conn.execute(
            sa.insert(db.memberships),
            [{"list_id": list_id, "subscriber_id": i, "created_at": now} for i in new],
        )


def test_csv_export_streams_what_the_cli_writes(admin: Admin) -> None:
    list_name = unique("csv")
    ann = admin.add(name='Ann, of the "Quotes"', lists=[list_name], attributes={"plan": "gold"})
    bob = admin.add(name="Bob", lists=[list_name], status="pending")
    _insert_subscribers(admin.engine, list_name, 1500)  # several pieces of the answer

    answer = admin.get("/subscribers.csv", params={"list": list_name})
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"] == (
        f'attachment; filename="subscribers-{list_name}.csv"'
    )
    assert answer.headers["cache-control"] == "no-store"
    assert "content-length" not in answer.headers  # streamed
    assert len(answer.content) > 128 * 1024
    expected = io.StringIO()
    assert exports.export_csv(admin.engine, expected, list_name=list_name) == 1502
    assert answer.content.decode("utf-8") == expected.getvalue()

    rows = list(csv.DictReader(io.StringIO(answer.text)))
    assert list(rows[0]) == [*exports.EXPORT_COLUMNS, "n", "plan", "source"]
    by_email = {row["email"]: row for row in rows}
    assert by_email[ann["email"]]["name"] == 'Ann, of the "Quotes"'
    assert by_email[ann["email"]]["plan"] == "gold"
    assert by_email[ann["email"]]["lists"] == list_name
    assert by_email[bob["email"]]["status"] == "pending"

    pending = admin.get("/subscribers.csv", params={"list": list_name, "status": "pending"})
    assert [row["email"] for row in csv.DictReader(io.StringIO(pending.text))] == [bob["email"]]
    everyone = admin.get("/subscribers.csv")
    assert everyone.headers["content-disposition"] == 'attachment; filename="subscribers.csv"'
    assert len(list(csv.DictReader(io.StringIO(everyone.text)))) >= 1502

    refused(admin.get("/subscribers.csv", params={"list": unique("none")}), 400, "no list named")
    refused(admin.get("/subscribers.csv", params={"status": "gone"}), 400, "unknown status")

    # A client that goes away in the middle leaves the service as it was.
    with admin.session.get(
        admin.url("/subscribers.csv"), params={"list": list_name}, stream=True, timeout=30
    ) as partial:
        assert partial.status_code == 200
        assert next(partial.iter_content(1024))
    assert admin.get("/subscribers", params={"list": list_name, "limit": 1}).status_code == 200


def test_csv_export_neutralises_spreadsheet_formulas(admin: Admin) -> None:
    list_name = unique("formula")
    names = ['=HYPERLINK("http://evil.example/","click")', "+1", "-2+3", "@SUM(A1:A9)"]
    for name in names:
        admin.add(name=name, lists=[list_name], attributes={"note": "\tcmd", "other": "\r=1"})
    admin.add(email=f"=1+{unique('x')}@example.org", lists=[list_name])

    answer = admin.get("/subscribers.csv", params={"list": list_name})
    assert answer.status_code == 200
    rows = list(csv.reader(io.StringIO(answer.text)))
    for row in rows:
        for cell in row:
            assert not cell.startswith(FORMULA_START), (cell, row)
    shown = {row[1] for row in rows[1:]}
    assert {f"'{name}" for name in names} <= shown


# -- issues ---------------------------------------------------------------------------------------


def test_issue_lifecycle(admin: Admin) -> None:
    audience = unique("readers")
    admin.add(lists=[audience])
    answer = admin.post(
        "/issues",
        {
            "subject": "  Vitamin K2 week  ",
            "preheader": "Two articles",
            "intro": "<p>Hello,</p>\n<p>two articles this week.</p>",
            "articles": [SEEDS[0], f"{SEEDS[1]}:teaser"],
            "audience": [audience],
        },
    )
    assert answer.status_code == 201, answer.text
    issue = answer.json()
    issue_id = issue["id"]
    path = f"/issues/{issue_id}"
    assert answer.headers["location"] == f"{API}{path}"
    assert issue["subject"] == "Vitamin K2 week"
    assert issue["status"] == "draft"
    assert issue["audience"] == [audience]
    assert issue["articles"] == [
        {"slug": SEEDS[0], "full": True},
        {"slug": SEEDS[1], "full": False},
    ]
    assert issue["progress"] == {
        "recipients": 0,
        "queued": 0,
        "sent": 0,
        "failed": 0,
        "skipped": 0,
        "batches": {},
    }
    assert admin.get(path).json() == issue

    when = (datetime.now(UTC) + timedelta(days=3)).replace(microsecond=0)
    local = when.astimezone(timezone(timedelta(hours=5, minutes=30))).isoformat()
    scheduled = admin.post(f"{path}/schedule", {"at": local, "time_zone": "Europe/Paris"})
    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json()["status"] == "scheduled"
    assert datetime.fromisoformat(scheduled.json()["send_at"]) == when
    assert scheduled.json()["time_zone"] == "Europe/Paris"
    refused(
        admin.post(f"{path}/schedule", {"at": "now"}),
        409,
        f"issue {issue_id} is scheduled: it can be scheduled only when it is draft",
    )

    paused = admin.post(f"{path}/pause")
    assert paused.status_code == 200
    assert (paused.json()["status"], paused.json()["status_reason"]) == (
        "paused",
        "paused by the editor",
    )
    refused(
        admin.post(f"{path}/pause"), 409, "it can be paused only when it is scheduled or sending"
    )

    resumed = admin.post(f"{path}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["status"] == "scheduled"  # it never started: it goes out now
    refused(admin.post(f"{path}/resume"), 409, "it can be resumed only when it is paused")
    refused(admin.post(f"{path}/retry-failed"), 409, "only an issue that has started sending")

    cancelled = admin.post(f"{path}/cancel")
    assert cancelled.status_code == 200
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert body["finished_at"] is not None
    assert [e["message"] for e in body["events"]] == [
        "cancelled by the editor",
        "resumed (scheduled)",
        "paused by the editor",
    ]
    for action in ("pause", "resume", "cancel"):
        refused(admin.post(f"{path}/{action}"), 409, f"issue {issue_id} is cancelled")
    refused(admin.post(f"{path}/schedule", {"at": "now"}), 409, "is cancelled")

    listed = admin.get("/issues").json()["items"]
    assert issue_id in [i["id"] for i in listed]
    assert [i["id"] for i in listed] == sorted((i["id"] for i in listed), reverse=True)
    assert issue_id in [i["id"] for i in admin.get("/issues?status=cancelled").json()["items"]]
    assert issue_id not in [i["id"] for i in admin.get("/issues?status=draft").json()["items"]]
    refused(admin.get("/issues?status=lost"), 400, "unknown issue status 'lost'")


def test_schedule_now(admin: Admin) -> None:
    issue = admin.issue()
    before = datetime.now(UTC)
    answer = admin.post(f"/issues/{issue['id']}/schedule", {"at": "NOW"})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "scheduled"
    send_at = datetime.fromisoformat(answer.json()["send_at"])
    assert before - timedelta(seconds=5) <= send_at <= datetime.now(UTC) + timedelta(seconds=5)
    assert admin.post(f"/issues/{issue['id']}/cancel").status_code == 200


def test_issues_refuse_bad_values(admin: Admin) -> None:
    audience = unique("known")
    admin.add(lists=[audience])
    for body, says in [
        ({"articles": ["no-such-article"]}, "no article with slug 'no-such-article'"),
        ({"articles": [f"{SEEDS[0]}:half"]}, "write slug, slug:full or slug:teaser"),
        ({"articles": [SEEDS[0], SEEDS[0]]}, "listed twice"),
        ({"articles": [f"{SEEDS[0]},{SEEDS[1]}"]}, "one article per item"),
        ({"audience": [unique("unknown")]}, "no subscriber list named"),
        ({"audience": ["a;b"]}, "contains ';'"),
        ({"subject": "   "}, "needs a subject"),
        ({"subject": "Hi\x00"}, "the subject contains control characters"),
        ({"preheader": "line\nbreak"}, "the preheader contains control characters"),
        ({"intro": "bell\x07"}, "the intro contains control characters"),
    ]:
        fields = {"subject": "Refused", "articles": [SEEDS[0]], "audience": [audience], **body}
        refused(admin.post("/issues", fields), 400, says)
    for body in [
        {"articles": [SEEDS[0]]},
        {"subject": "", "articles": [SEEDS[0]]},
        {"subject": "x", "articles": []},
        {"subject": "x" * 301, "articles": [SEEDS[0]]},
        {"subject": "x", "articles": [SEEDS[0]] * 51},
        {"subject": "x", "articles": [SEEDS[0]], "status": "sent"},
    ]:
        refused(admin.post("/issues", body), 422)

    issue = admin.issue(audience=[audience])
    path = f"/issues/{issue['id']}/schedule"
    past = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    for at, says in [
        ("tomorrow", "is not a time"),
        ("2099-01-01T08:00", "has no offset"),
        ("2099-01-01", "has no offset"),
        (past, "is in the past"),
        ("9999-12-31T23:59:59-23:59", "out of range"),
    ]:
        refused(admin.post(path, {"at": at}), 400, says)
    refused(
        admin.post(path, {"at": "now", "time_zone": "Atlantis/Capital"}), 400, "unknown time zone"
    )
    refused(admin.post(path, {}), 422)
    refused(admin.post(path, {"at": "x" * 65}), 422)
    assert admin.get(f"/issues/{issue['id']}").json()["status"] == "draft"

    missing = 999_999_999
    refused(admin.get(f"/issues/{missing}"), 404, f"no issue {missing}")
    refused(admin.get(f"/issues/{missing}/clicks"), 404, f"no issue {missing}")
    refused(admin.post(f"/issues/{missing}/schedule", {"at": "now"}), 404, f"no issue {missing}")
    for action in ("pause", "resume", "cancel", "retry-failed"):
        refused(admin.post(f"/issues/{missing}/{action}"), 404, f"no issue {missing}")
    for bad in ("0", "-1", str(2**63), "one"):
        refused(admin.get(f"/issues/{bad}"), 422)


def test_retry_failed_queues_the_failed_deliveries(admin: Admin) -> None:
    reader = admin.add()
    issue = admin.issue()
    issue_id, now = issue["id"], db.now()
    with admin.engine.begin() as conn:
        conn.execute(
            sa.update(db.issues)
            .where(db.issues.c.id == issue_id)
            .values(status="sent", started_at=now, finished_at=now, recipients=1, failed=1)
        )
        conn.execute(
            sa.insert(db.deliveries).values(
                issue_id=issue_id,
                subscriber_id=reader["id"],
                batch_id=0,
                status="failed",
                reason="provider error",
                updated_at=now,
            )
        )
    broker = redis.Redis.from_url(admin.redis_url)
    queue = f"{admin.svc.settings.redis_prefix}.default"
    broker.delete(queue)
    try:
        answer = admin.post(f"/issues/{issue_id}/retry-failed")
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["status"] == "sending"
        assert body["progress"]["failed"] == 0
        assert body["progress"]["batches"] == {"pending": 1}
        assert body["events"][0]["message"] == "retrying 1 failed deliveries"
        with admin.engine.connect() as conn:
            batch = conn.execute(
                sa.select(db.batches).where(db.batches.c.issue_id == issue_id)
            ).one()
            delivery = conn.execute(
                sa.select(db.deliveries).where(db.deliveries.c.issue_id == issue_id)
            ).one()
        assert (batch.retry, batch.status) == (True, "pending")
        assert batch.enqueued_at is not None  # handed to the workers' queue
        assert (delivery.status, delivery.batch_id) == ("queued", batch.id)
        assert broker.llen(queue) == 1
        refused(admin.post(f"/issues/{issue_id}/resume"), 409, "is sending")
    finally:
        broker.delete(queue)
        broker.close()
    assert admin.post(f"/issues/{issue_id}/cancel").json()["progress"]["batches"] == {
        "cancelled": 1
    }


def test_clicks_summary(admin: Admin) -> None:
    issue_id = admin.issue()["id"]
    other_id = admin.issue()["id"]
    now = db.now()
    with admin.engine.begin() as conn:
        conn.execute(
            sa.insert(db.issue_links),
            [
                {
                    "issue_id": issue_id,
                    "position": 0,
                    "url": "https://a.example/",
                    "slug": SEEDS[0],
                },
                {
                    "issue_id": issue_id,
                    "position": 1,
                    "url": "https://b.example/x?y=1",
                    "slug": None,
                },
                {"issue_id": issue_id, "position": 2, "url": "https://c.example/", "slug": None},
                {"issue_id": other_id, "position": 0, "url": "https://a.example/", "slug": None},
            ],
        )
        conn.execute(
            sa.insert(db.clicks),
            [
                {
                    "issue_id": issue_id,
                    "subscriber_id": 1,
                    "position": 0,
                    "at": now,
                    "engaged": True,
                },
                {
                    "issue_id": issue_id,
                    "subscriber_id": 1,
                    "position": 0,
                    "at": now,
                    "engaged": True,
                },
                {
                    "issue_id": issue_id,
                    "subscriber_id": 2,
                    "position": 0,
                    "at": now,
                    "engaged": False,
                },
                {
                    "issue_id": issue_id,
                    "subscriber_id": 3,
                    "position": 1,
                    "at": now,
                    "engaged": True,
                },
                {
                    "issue_id": other_id,
                    "subscriber_id": 4,
                    "position": 0,
                    "at": now,
                    "engaged": True,
                },
            ],
        )
    answer = admin.get(f"/issues/{issue_id}/clicks")
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "issue_id": issue_id,
        "clicks": 4,
        "engaged": 3,
        "subscribers": 3,
        "links": [
            {
                "position": 0,
                "url": "https://a.example/",
                "slug": SEEDS[0],
                "clicks": 3,
                "engaged": 2,
                "subscribers": 2,
            },
            {
                "position": 1,
                "url": "https://b.example/x?y=1",
                "slug": None,
                "clicks": 1,
                "engaged": 1,
                "subscribers": 1,
            },
            {
                "position": 2,
                "url": "https://c.example/",
                "slug": None,
                "clicks": 0,
                "engaged": 0,
                "subscribers": 0,
            },
        ],
    }
    empty = admin.get(f"/issues/{admin.issue()['id']}/clicks").json()
    assert (empty["clicks"], empty["subscribers"], empty["links"]) == (0, 0, [])


# -- bad input ------------------------------------------------------------------------------------


def test_bad_input_never_gets_a_server_error(admin: Admin) -> None:
    """Values that databases, JSON or the domain choke on are refused with a 4xx."""
    nul, long_text = "a\x00b", "x" * 100_000
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("GET", "/subscribers", {"params": {"list": nul}}),
        ("GET", "/subscribers", {"params": {"email": nul}}),
        ("GET", "/subscribers", {"params": {"status": nul}}),
        ("GET", "/subscribers", {"params": {"after": "1e400"}}),
        ("GET", "/subscribers.csv", {"params": {"list": nul}}),
        ("GET", "/issues", {"params": {"status": nul}}),
        ("POST", "/subscribers", {"json": {"email": f"{nul}@example.org"}}),
        ("POST", "/subscribers", {"json": {"email": address(), "name": nul}}),
        ("POST", "/subscribers", {"json": {"email": address(), "attributes": {nul: "x"}}}),
        ("POST", "/subscribers", {"json": {"email": address(), "time_zone": nul}}),
        ("POST", "/subscribers", {"json": {"email": address(), "time_zone": "../../etc/passwd"}}),
        ("POST", "/subscribers", {"json": {"email": long_text}}),
        ("POST", "/subscribers", {"json": [address()]}),
        ("POST", "/subscribers", {"data": b'{"email": "\\ud800@example.org"}'}),
        (
            "POST",
            "/subscribers",
            {"data": b"\xff\xfe", "headers": {"content-type": "application/json"}},
        ),
        ("POST", "/subscribers", {"data": b"email=a@example.org"}),
        ("PATCH", "/subscribers/1", {"json": {"add_lists": [nul]}}),
        ("PATCH", "/subscribers/1", {"json": {"remove_lists": [nul]}}),
        ("POST", "/issues", {"json": {"subject": "x", "articles": [nul]}}),
        ("POST", "/issues", {"json": {"subject": "x", "articles": [SEEDS[0]], "audience": [nul]}}),
        ("POST", "/issues/1/schedule", {"json": {"at": nul}}),
        ("POST", "/issues/1/schedule", {"json": {"at": "now", "time_zone": nul}}),
        ("POST", "/issues/1/schedule", {"json": {"at": "0001-01-01T00:00:00+05:00"}}),
        ("POST", "/issues/1/schedule", {"json": {"at": "9999-12-31T23:59:59.999999-23:59"}}),
        ("DELETE", f"/subscribers/{2**64}", {}),
        ("GET", f"/issues/{2**63 - 1}/clicks", {}),
        ("GET", f"/subscribers/{2**63 - 1}", {}),
    ]
    for method, path, kwargs in attempts:
        answer = admin.session.request(method, admin.url(path), timeout=30, **kwargs)
        assert 400 <= answer.status_code < 500, (
            method,
            path,
            kwargs,
            answer.status_code,
            answer.text,
        )
        assert answer.headers["content-type"] == "application/json"
    assert "Traceback" not in admin.svc.output()


# -- the same behaviour with and without Redis ------------------------------------------------


class _Hold:
    """A dispatcher that keeps what it is given: the batches stay pending, as when the
    workers have not taken them yet."""

    def enqueue(self, batch_ids: object) -> None:
        pass


def _paused_mid_send(admin: Admin, parts: SendingParts) -> int:
    """An issue to one new reader that started (its batch made, not sent) and was paused."""
    reader = admin.add(lists=[unique("solo")])
    issue_id = int(admin.issue(audience=reader["lists"])["id"])
    issues.schedule(admin.svc.engine, issue_id, None)  # as the CLI does: nothing starts it
    assert parts.start_due(_Hold()) == [issue_id]
    assert admin.post(f"/issues/{issue_id}/pause").json()["status"] == "paused"
    return issue_id


def test_without_redis_the_admin_api_and_the_cli_both_send_a_resumed_issue(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Without a broker the CLI sends the resumed batches itself; the admin API does the
    same (after its answer) instead of leaving them to a sweep that may never run."""
    with (
        running_service(tmp_path, sqlite_url, None, settings={"content_dir": str(CONTENT)}) as svc,
        requests.Session() as session,
    ):
        session.headers["authorization"] = f"Bearer {ADMIN_TOKEN}"
        admin = Admin(svc, session, "")
        parts = SendingParts(svc.settings)
        by_api, by_cli = _paused_mid_send(admin, parts), _paused_mid_send(admin, parts)

        assert admin.post(f"/issues/{by_api}/resume").status_code == 200
        config = tmp_path / "service.toml"
        env = {"DATABASE_URL": sqlite_url, "LETTERPRESS_SECRET_KEY": SECRET}
        resumed = CliRunner().invoke(
            cli, ["--config", str(config), "issue", "resume", str(by_cli)], env=env
        )
        assert resumed.exit_code == 0, resumed.output

        def finished(issue_id: int) -> dict[str, Any] | None:
            body = dict(admin.get(f"/issues/{issue_id}").json())
            return body if body["status"] == "sent" else None

        api = wait_for(lambda: finished(by_api), 30, f"issue {by_api} to be sent")
        done = wait_for(lambda: finished(by_cli), 5, f"issue {by_cli} to be sent")
        assert api["progress"] == done["progress"]
        assert (api["progress"]["sent"], api["progress"]["failed"]) == (1, 0)
        for issue_id in (by_api, by_cli):
            assert len(list((svc.settings.outbox_dir / f"issue-{issue_id}").glob("*.eml"))) == 1


def test_without_redis_an_issue_scheduled_for_now_is_sent_without_a_beat(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Scheduled for now through the admin API or the console, with no broker and no
    beat running: the service starts and sends it after its answer."""
    from tests.test_console import Console, add_user

    with (
        running_service(tmp_path, sqlite_url, None, settings={"content_dir": str(CONTENT)}) as svc,
        requests.Session() as session,
    ):
        session.headers["authorization"] = f"Bearer {ADMIN_TOKEN}"
        admin = Admin(svc, session, "")
        by_api = int(admin.issue(audience=admin.add(lists=[unique("now")])["lists"])["id"])
        by_console = int(admin.issue(audience=admin.add(lists=[unique("now")])["lists"])["id"])
        assert admin.post(f"/issues/{by_api}/schedule", {"at": "now"}).status_code == 200
        add_user(svc, "eddie@example.com", Role.EDITOR)
        editor = Console(svc).signed_in("eddie@example.com")
        editor.get(f"/admin/issues/{by_console}")
        editor.post(f"/admin/issues/{by_console}/schedule/review", {"when": "now"})
        scheduled = editor.post(f"/admin/issues/{by_console}/schedule", {"when": "now"})
        assert scheduled.status_code == 303, scheduled.text
        for issue_id in (by_api, by_console):
            wait_for(
                lambda i=issue_id: admin.get(f"/issues/{i}").json()["status"] == "sent",
                30,
                f"issue {issue_id} to be sent",
            )
            assert admin.get(f"/issues/{issue_id}").json()["progress"]["sent"] == 1
            assert len(list((svc.settings.outbox_dir / f"issue-{issue_id}").glob("*.eml"))) == 1
