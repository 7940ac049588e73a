"""The editors' console under /admin/ against the real service (``letterpress serve`` in
its own process, on SQLite and Redis): signing in and out, the session cookie, CSRF
(token and Origin), roles, the rate limits of sign-in, idle sessions, two-factor
sign-in and the audit log. Users are made with ``pipeline.people.users.add`` on the
service's own database, as ``letterpress users add`` does.

Signing in runs on SQLite and PostgreSQL; the rest on SQLite, as the people domain's
SQL is the same on both and tests/test_people.py runs it on both.

The https case (a ``Secure`` cookie) and the routes' own declarations are checked on
the application in this process, through httpx's ASGI transport.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import fastapi.routing
import httpx
import pyotp
import requests
import sqlalchemy as sa

from pipeline.people import audit, sessions, users
from pipeline.people.users import User
from pipeline.settings import Settings
from pipeline.statuses import Role
from pipeline.store import db
from pipeline.web.app import create_app
from pipeline.web.console import csrf
from tests.service import RunningService
from tests.test_service import service_for

__all__ = ["service_for"]  # a fixture, imported for pytest

PASSWORD = "correct horse battery staple"
TOKEN_FIELD = re.compile(r'name="csrf" value="([^"]*)"')


def add_user(svc: RunningService, email: str, role: Role, password: str = PASSWORD) -> User:
    return users.add(svc.engine, email, role, password, name=email.split("@")[0].title())


class Console:
    """One browser's worth of the console: its own cookies, and the site's Origin on
    every POST unless told otherwise."""

    def __init__(self, svc: RunningService) -> None:
        self.svc = svc
        self.http = requests.Session()
        self.page_token = ""

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("allow_redirects", False)
        answer = self.http.get(self.svc.url + path, timeout=10, **kwargs)
        found = TOKEN_FIELD.search(answer.text)
        if found:
            self.page_token = found.group(1)
        return answer

    def post(
        self,
        path: str,
        data: dict[str, str] | None = None,
        origin: str | None = "site",
        token: str | None = "page",
        headers: dict[str, str] | None = None,
    ) -> requests.Response:
        sent = dict(data or {})
        if token == "page":
            sent["csrf"] = self.page_token
        elif token is not None:
            sent["csrf"] = token
        extra = dict(headers or {})
        if origin == "site":
            extra["Origin"] = self.svc.url
        elif origin is not None:
            extra["Origin"] = origin
        return self.http.post(
            self.svc.url + path, data=sent, headers=extra, timeout=10, allow_redirects=False
        )

    def sign_in(self, email: str, password: str = PASSWORD, next_: str = "") -> requests.Response:
        page = self.get("/admin/sign-in" + (f"?next={next_}" if next_ else ""))
        assert page.status_code == 200, page.text
        return self.post("/admin/sign-in", {"email": email, "password": password, "next": next_})

    def signed_in(self, email: str, password: str = PASSWORD) -> Console:
        answer = self.sign_in(email, password)
        assert answer.status_code == 303, answer.text
        self.get(answer.headers["location"])  # the page's token, for the next POST
        return self


def age_sessions(svc: RunningService) -> None:
    """Every console session, as if unused for longer than the idle time."""
    idle = timedelta(minutes=svc.settings.console_idle_minutes + 1)
    with svc.engine.begin() as conn:
        conn.execute(sa.update(db.console_sessions).values(seen_at=db.now() - idle))


def text_of(html: str, pattern: str) -> list[str]:
    return [re.sub(r"<[^>]+>", "", m).strip() for m in re.findall(pattern, html, re.S)]


def alerts(answer: requests.Response) -> list[str]:
    return text_of(answer.text, r'role="alert"[^>]*>(.*?)</p>')


def emails(svc: RunningService) -> list[str]:
    return [u.email for u in users.all_users(svc.engine)]


# -- signing in ----------------------------------------------------------------------------------


def test_sign_in_refuses_a_wrong_password_and_lands_where_it_was_going(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    add_user(svc, "olive@example.com", Role.OWNER)
    browser = Console(svc)

    # Signed out, a page sends the browser to sign in, and back there afterwards.
    answer = browser.get("/admin/users")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/admin/sign-in?next=/admin/users"
    wrong = browser.sign_in("olive@example.com", "not the password at all", "/admin/users")
    assert wrong.status_code == 400
    assert alerts(wrong) == ["Wrong address or password."]
    assert "lp_console" not in wrong.cookies
    unknown = browser.sign_in("nobody@example.com", PASSWORD)
    assert alerts(unknown) == ["Wrong address or password."]  # the same for both

    right = browser.sign_in("Olive@Example.com", PASSWORD, "/admin/users")
    assert right.status_code == 303
    assert right.headers["location"] == "/admin/users"
    page = browser.get("/admin/users")
    assert page.status_code == 200
    assert "<h1>Users</h1>" in page.text

    # Without a next, the home page; the sign-in page of a signed-in user goes there too.
    again = Console(svc).sign_in("olive@example.com")
    assert (again.status_code, again.headers["location"]) == (303, "/admin/")
    assert browser.get("/admin/sign-in").headers["location"] == "/admin/"
    home = browser.get("/admin/")
    assert home.status_code == 200
    assert "Signed in as <strong>Olive</strong>" in home.text

    log = audit.recent(svc.engine)
    assert [(e.user_email, e.action, e.detail) for e in log[:4]] == [
        ("olive@example.com", "signed in", ""),
        ("olive@example.com", "signed in", ""),
        (None, "sign-in refused", "wrong address or password: nobody@example.com"),
        ("olive@example.com", "sign-in refused", "wrong address or password"),
    ]
    assert not any("not the password" in e.detail or PASSWORD in e.detail for e in log)


def test_the_next_page_is_only_ever_one_of_the_console(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "olive@example.com", Role.OWNER)
    for target in ("//evil.example/admin/", "https://evil.example/", "/\\evil.example", "/issues/"):
        answer = Console(svc).sign_in("olive@example.com", next_=target)
        assert (answer.status_code, answer.headers["location"]) == (303, "/admin/"), target


def test_the_session_cookie_and_the_headers_of_console_pages(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "olive@example.com", Role.OWNER)
    browser = Console(svc)
    answer = browser.sign_in("olive@example.com")
    cookie = next(
        c for c in answer.raw.headers.getlist("set-cookie") if c.startswith("lp_console=")
    )
    flags = {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}
    assert "httponly" in flags
    assert flags["samesite"].lower() == "samesite=lax"
    assert flags["path"] == "Path=/admin"
    assert "secure" not in flags  # the base URL is http
    assert flags["max-age"] == f"Max-Age={7 * 86400}"

    page = browser.get("/admin/")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["x-content-type-options"] == "nosniff"
    scripts = re.findall(r"<script[^>]*>", page.text)  # only files of the site, none inline
    assert scripts == [
        '<script src="/admin/static/htmx.min.js" defer>',
        '<script src="/admin/static/console.js" defer>',
    ]
    for name in ("htmx.min.js", "console.js"):
        js = browser.get(f"/admin/static/{name}")
        assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert browser.get("/admin/static/..%2Fauth.py").status_code == 404
    assert browser.get("/admin/static/other.js").status_code == 404
    assert browser.get("/admin/console.css").headers["content-type"].startswith("text/css")


def test_the_cookie_is_secure_when_the_base_url_is_https(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(
        base_url="https://news.example.org",
        database_url=sqlite_url,
        redis_url=None,
        secret_key="console-test-secret-key-0123456789",
    )
    users.add(db.engine(sqlite_url), "olive@example.com", Role.OWNER, PASSWORD)
    app = create_app(settings)

    async def sign_in() -> tuple[list[str], int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="https://news.example.org"
        ) as client:
            form = await client.get("/admin/sign-in")
            token = TOKEN_FIELD.search(form.text)
            assert token is not None
            answer = await client.post(
                "/admin/sign-in",
                data={"email": "olive@example.com", "password": PASSWORD, "csrf": token.group(1)},
                headers={"Origin": "https://news.example.org"},
            )
            home = await client.get("/admin/")  # the Secure cookie goes back over https
            cookies = form.headers.get_list("set-cookie") + answer.headers.get_list("set-cookie")
            return cookies, home.status_code

    cookies, home = asyncio.run(sign_in())
    # The __Secure- prefix: a browser takes these names only from an https answer.
    assert not any(c.startswith("lp_console") for c in cookies), cookies
    session = next(c for c in cookies if c.startswith("__Secure-lp_console="))
    assert "Secure" in session and "HttpOnly" in session and "Path=/admin" in session
    pre = next(c for c in cookies if c.startswith("__Secure-lp_console_pre="))  # the form's
    assert "Secure" in pre and "HttpOnly" in pre
    assert home == 200


def test_console_routes_check_csrf_and_stay_out_of_the_api_description(
    sqlite_url: str, make_settings: Callable[..., Settings]
) -> None:
    app = create_app(make_settings(database_url=sqlite_url, redis_url=None, secret_key="k" * 32))
    checks = {csrf.protect, csrf.protect_sign_in}
    # FastAPI from 0.16x includes routers lazily: walk the routes they make.
    walk = getattr(fastapi.routing, "iter_route_contexts", None)
    routes = list(walk(app.routes)) if walk is not None else app.routes
    unsafe = 0
    for route in routes:
        path = getattr(route, "path", None) or ""
        if not path.startswith("/admin") or not hasattr(route, "dependant"):
            continue
        assert not route.include_in_schema, path
        if route.methods & csrf.UNSAFE:
            unsafe += 1
            calls = {d.call for d in route.dependant.dependencies}
            assert calls & checks, f"{path} has no CSRF check"
    assert unsafe >= 8
    assert not [p for p in app.openapi()["paths"] if p.startswith("/admin")]


# -- CSRF ----------------------------------------------------------------------------------------


def test_a_post_without_the_token_is_refused_and_changes_nothing(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "olive@example.com", Role.OWNER)
    owner = Console(svc).signed_in("olive@example.com")
    owner.get("/admin/users")
    new = {"email": "eve@example.com", "role": "owner", "password": PASSWORD}
    for token in (None, "", "not-the-token", owner.page_token + "x"):
        answer = owner.post("/admin/users", new, token=token)
        assert answer.status_code == 403, token
        assert "did not come from a page of the console" in answer.text
        assert answer.headers["cache-control"] == "no-store"
    target = users.by_email(svc.engine, "olive@example.com")
    assert target is not None
    assert owner.post("/admin/sign-out-everywhere", token=None).status_code == 403
    assert (
        owner.post(f"/admin/users/{target.id}/role", {"role": "viewer"}, token=None).status_code
        == 403
    )
    assert emails(svc) == ["olive@example.com"]
    assert users.get(svc.engine, target.id).role == Role.OWNER
    assert owner.get("/admin/").status_code == 200  # still signed in

    # The token as a header (how htmx sends it) is as good as the form field.
    header = owner.post("/admin/users", new, token=None, headers={"X-CSRF-Token": owner.page_token})
    assert header.status_code == 303
    assert "eve@example.com" in emails(svc)


def test_a_post_from_another_origin_is_refused(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "olive@example.com", Role.OWNER)
    owner = Console(svc).signed_in("olive@example.com")
    owner.get("/admin/users")
    new = {"email": "eve@example.com", "role": "owner", "password": PASSWORD}
    for origin in ("https://evil.example", "null", svc.url.replace("127.0.0.1", "localhost")):
        assert owner.post("/admin/users", new, origin=origin).status_code == 403, origin
    # No Origin and no Referer: refused. A Referer of the site stands in for the Origin.
    assert owner.post("/admin/users", new, origin=None).status_code == 403
    evil = {"Referer": "https://evil.example/admin/users"}
    assert owner.post("/admin/users", new, origin=None, headers=evil).status_code == 403
    assert emails(svc) == ["olive@example.com"]
    ours = {"Referer": svc.url + "/admin/users"}
    assert owner.post("/admin/users", new, origin=None, headers=ours).status_code == 303
    assert "eve@example.com" in emails(svc)

    # The sign-in form too: another site cannot sign a browser in.
    stranger = Console(svc)
    stranger.get("/admin/sign-in")
    form = {"email": "olive@example.com", "password": PASSWORD}
    assert stranger.post("/admin/sign-in", form, origin="https://evil.example").status_code == 403
    assert stranger.post("/admin/sign-in", form, token="forged").status_code == 403
    fresh = Console(svc)  # a form token without the cookie it belongs to
    assert fresh.post("/admin/sign-in", form, token=stranger.page_token).status_code == 403
    assert "lp_console" not in stranger.http.cookies and "lp_console" not in fresh.http.cookies


# -- roles ---------------------------------------------------------------------------------------


def test_an_author_cannot_manage_users(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "olive@example.com", Role.OWNER)
    add_user(svc, "arthur@example.com", Role.AUTHOR)
    author = Console(svc).signed_in("arthur@example.com")
    home = author.get("/admin/")
    assert 'href="/admin/users"' not in home.text
    assert 'href="/admin/audit"' in home.text

    page = author.get("/admin/users")
    assert page.status_code == 403
    assert "<h1>You cannot manage users</h1>" in page.text
    assert "Authors can compose and test issues; only an owner manages users." in page.text

    # A forged request with the author's own valid token: the role refuses it.
    forged = author.post(
        "/admin/users", {"email": "eve@example.com", "role": "owner", "password": PASSWORD}
    )
    assert forged.status_code == 403
    arthur = users.by_email(svc.engine, "arthur@example.com")
    assert arthur is not None
    promote = author.post(f"/admin/users/{arthur.id}/role", {"role": "owner"})
    assert promote.status_code == 403
    assert emails(svc) == ["arthur@example.com", "olive@example.com"]
    assert users.get(svc.engine, arthur.id).role == Role.AUTHOR
    assert author.get("/admin/audit").status_code == 200  # every role reads the log


def test_an_owner_adds_people_and_changes_a_role_and_the_audit_log_shows_it(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "olive@example.com", Role.OWNER)
    owner = Console(svc).signed_in("olive@example.com")
    owner.get("/admin/users")
    added = owner.post(
        "/admin/users",
        {
            "email": "Edna@Example.com",
            "name": "Edna Editor",
            "role": "editor",
            "password": PASSWORD,
        },
    )
    assert added.status_code == 303
    page = owner.get(added.headers["location"])
    assert text_of(page.text, r'id="status"[^>]*>(.*?)</p>') == [
        "Added edna@example.com as editor."
    ]
    owner.post(
        "/admin/users",
        {"email": "arthur@example.com", "name": "", "role": "author", "password": PASSWORD},
    )
    # A refused one says why, keeps what was typed (not the password) and adds nobody.
    short = owner.post(
        "/admin/users", {"email": "x@example.com", "role": "viewer", "password": "short"}
    )
    assert short.status_code == 400
    assert "The password is too short" in alerts(short)[0]
    assert (
        'value="x@example.com"' in short.text
        and "short" not in re.findall(r'type="password"[^>]*', short.text)[0]
    )

    arthur = users.by_email(svc.engine, "arthur@example.com")
    assert arthur is not None
    changed = owner.post(f"/admin/users/{arthur.id}/role", {"role": "viewer"})
    assert changed.status_code == 303
    assert users.get(svc.engine, arthur.id).role == Role.VIEWER
    # With htmx, the answer is the user's card and the status line (out of band).
    card = owner.post(
        f"/admin/users/{arthur.id}/role", {"role": "author"}, headers={"HX-Request": "true"}
    )
    assert card.status_code == 200 and card.headers["vary"] == "HX-Request"
    assert card.text.startswith(f'<li id="user-{arthur.id}"')
    assert 'hx-swap-oob="innerHTML">arthur@example.com is now author.</p>' in card.text
    assert "<html" not in card.text
    # The last owner keeps the role.
    olive = users.by_email(svc.engine, "olive@example.com")
    assert olive is not None
    last = owner.post(f"/admin/users/{olive.id}/role", {"role": "viewer"})
    assert last.status_code == 400 and "is the last owner" in alerts(last)[0]

    log = owner.get("/admin/audit")
    assert log.status_code == 200 and log.headers["vary"] == "HX-Request"
    rows = text_of(log.text, r"<tr>\s*(.*?)</tr>")[1:]
    what = [re.sub(r"\s+", " ", r) for r in rows]
    assert what[0].endswith("olive@example.com role changed arthur@example.com: viewer → author")
    assert what[1].endswith("olive@example.com role changed arthur@example.com: author → viewer")
    assert what[2].endswith("olive@example.com user added arthur@example.com as author")
    assert what[3].endswith("olive@example.com user added edna@example.com as editor")
    fragment = owner.get("/admin/audit", headers={"HX-Request": "true"})
    assert (
        fragment.text.startswith('<section id="log"') and fragment.headers["vary"] == "HX-Request"
    )


def test_disabling_a_user_ends_their_sessions(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "olive@example.com", Role.OWNER)
    edna = add_user(svc, "edna@example.com", Role.EDITOR)
    owner = Console(svc).signed_in("olive@example.com")
    editor = Console(svc).signed_in("edna@example.com")
    owner.get("/admin/users")
    assert owner.post(f"/admin/users/{edna.id}/disable").status_code == 303
    assert users.get(svc.engine, edna.id).disabled
    assert editor.get("/admin/").status_code == 303
    assert alerts(Console(svc).sign_in("edna@example.com")) == ["This account is disabled."]


# -- the limits of signing in ----------------------------------------------------------------------


def test_too_many_attempts_lock_the_account_out(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "olive@example.com", Role.OWNER)
    add_user(svc, "edna@example.com", Role.EDITOR)
    limit = svc.settings.console_signin_per_account_per_15min
    assert limit == 5
    # Signing in is not an attempt that counts: one who signs in often is not locked out.
    for _ in range(limit + 1):
        assert Console(svc).sign_in("olive@example.com").status_code == 303
    browser = Console(svc)
    for _ in range(limit):
        assert browser.sign_in("olive@example.com", "wrong password, again").status_code == 400
    locked = browser.sign_in("olive@example.com", PASSWORD)  # even the right password
    assert locked.status_code == 429
    (message,) = alerts(locked)
    assert re.fullmatch(
        r"Too many sign-in attempts for this account: try again in 1[0-5] minutes\.", message
    ), message
    assert 0 < int(locked.headers["retry-after"]) <= 900
    assert "lp_console" not in browser.http.cookies
    # Other accounts are not locked; the address is the same however it is written.
    assert Console(svc).sign_in(" OLIVE@example.com").status_code == 429
    assert Console(svc).sign_in("edna@example.com").status_code == 303
    # The owner can see it: each refusal of the locked account is in the audit log.
    refusals = [
        e.detail
        for e in audit.recent(svc.engine)
        if e.user_email == "olive@example.com" and e.action == "sign-in refused"
    ]
    locked = "locked out: too many sign-in attempts for this account"
    assert refusals == 2 * [locked] + limit * ["wrong address or password"]


def test_too_many_attempts_from_one_address_are_refused(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url, console_signin_per_ip_per_hour=3)
    add_user(svc, "olive@example.com", Role.OWNER)
    browser = Console(svc)
    for n in range(3):
        assert browser.sign_in(f"nobody{n}@example.com", "wrong password").status_code == 400
    locked = browser.sign_in("olive@example.com")
    assert locked.status_code == 429
    assert re.fullmatch(
        r"Too many sign-in attempts from your network address: try again in \d+ minutes?\.",
        alerts(locked)[0],
    )


# -- sessions ----------------------------------------------------------------------------------


def test_ipv6_clients_are_counted_by_their_64_network(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    """A host with IPv6 has a whole /64 to take new addresses from: the limit counts the
    network. The addresses come through the proxy's X-Forwarded-For, as in production."""
    svc = service_for(sqlite_url, console_signin_per_ip_per_hour=3)
    add_user(svc, "olive@example.com", Role.OWNER)

    tried = iter(range(100))  # a new account each time: only the address's limit counts

    def attempt(client: str) -> int:
        browser = Console(svc)
        browser.http.headers["X-Forwarded-For"] = client
        return browser.sign_in(f"nobody{next(tried)}@example.com", "wrong password").status_code

    assert [attempt(f"2001:db8:1:2::{n}") for n in range(1, 4)] == [400, 400, 400]
    assert attempt("2001:db8:1:2:ffff:ffff:ffff:ffff") == 429  # the same /64
    assert attempt("2001:db8:1:3::1") == 400  # the next /64 is someone else
    assert [attempt(a) for a in ("192.0.2.7", "::ffff:192.0.2.7", "192.0.2.7")] == [
        400,
        400,
        400,
    ]
    assert attempt("192.0.2.7") == 429  # an IPv4-mapped address is that IPv4 address
    assert attempt("192.0.2.8") == 400


def test_signing_out_everywhere_ends_every_session(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "olive@example.com", Role.OWNER)
    laptop = Console(svc).signed_in("olive@example.com")
    phone = Console(svc).signed_in("olive@example.com")
    tablet = Console(svc).signed_in("olive@example.com")

    # Signing out ends this session only.
    out = tablet.post("/admin/sign-out")
    assert (out.status_code, out.headers["location"]) == (303, "/admin/sign-in?out=1")
    assert "You are signed out." in tablet.get("/admin/sign-in?out=1").text
    assert tablet.get("/admin/").status_code == 303
    assert phone.get("/admin/").status_code == 200

    everywhere = laptop.post("/admin/sign-out-everywhere")
    assert everywhere.status_code == 303
    assert laptop.get("/admin/").status_code == 303
    gone = phone.get("/admin/users")
    ended = "/admin/sign-in?next=/admin/users&out=ended"  # its cookie signs nobody in now
    assert (gone.status_code, gone.headers["location"]) == (303, ended)
    assert "Your session has ended: sign in again to go on." in phone.get(ended).text
    # The ended session's cookie went with that answer. An htmx request is told where to
    # go instead of being sent there.
    hx = phone.get(
        "/admin/audit?page=2",
        headers={"HX-Request": "true", "HX-Current-URL": svc.url + "/admin/audit?page=2"},
    )
    assert hx.status_code == 401
    assert hx.headers["hx-redirect"] == "/admin/sign-in?next=/admin/audit%3Fpage%3D2"
    actions = [(e.action, e.detail) for e in audit.recent(svc.engine, limit=2)]
    assert actions == [
        ("signed out everywhere", "olive@example.com; 2 sessions ended"),
        ("signed out", ""),
    ]


def test_a_session_unused_for_longer_than_the_idle_time_is_refused(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    olive = add_user(svc, "olive@example.com", Role.OWNER)
    idle = timedelta(minutes=svc.settings.console_idle_minutes)
    week = timedelta(days=svc.settings.console_session_days)
    stale, _ = sessions.start(
        svc.engine, olive.id, idle, week, now=db.now() - idle - timedelta(minutes=1)
    )
    recent, _ = sessions.start(
        svc.engine, olive.id, idle, week, now=db.now() - idle + timedelta(minutes=5)
    )
    for token, status in ((stale, 303), (recent, 200)):
        browser = Console(svc)
        browser.http.cookies.set("lp_console", token, path="/admin")
        assert browser.get("/admin/").status_code == status


def test_a_form_sent_after_the_session_ended_signs_in_again_and_comes_back(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "olive@example.com", Role.OWNER)
    browser = Console(svc).signed_in("olive@example.com")
    browser.get("/admin/users")
    age_sessions(svc)
    form = {"email": "new@example.com", "role": "viewer", "password": PASSWORD}
    sent = browser.post("/admin/users", form, headers={"Referer": svc.url + "/admin/users"})
    assert (sent.status_code, sent.headers["location"]) == (
        303,
        "/admin/sign-in?next=/admin/users&out=ended",
    )
    assert emails(svc) == ["olive@example.com"]
    # Only a page of the console is where anyone is sent back to.
    browser = Console(svc).signed_in("olive@example.com")
    age_sessions(svc)
    sent = browser.post("/admin/users", form, headers={"Referer": "https://evil.example/win"})
    assert sent.headers["location"] == "/admin/sign-in?out=ended"


# -- two-factor sign-in --------------------------------------------------------------------------


def test_a_role_that_must_use_two_factor_sign_in_sets_it_up_then_signs_in_with_a_code(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url, console_totp_roles=["editor", "owner"])
    add_user(svc, "edna@example.com", Role.EDITOR)
    add_user(svc, "arthur@example.com", Role.AUTHOR)
    editor = Console(svc)
    answer = editor.sign_in("edna@example.com")
    assert (answer.status_code, answer.headers["location"]) == (303, "/admin/totp")
    # Until it is set up, every page of the console sends her back there.
    for path in ("/admin/", "/admin/audit"):
        assert editor.get(path).headers["location"] == "/admin/totp"
    hx = editor.get("/admin/audit", headers={"HX-Request": "true"})
    assert hx.headers["hx-redirect"] == "/admin/totp"

    setup = editor.get("/admin/totp")
    assert setup.status_code == 200
    assert "Your role (editor) signs in with a code" in setup.text
    assert 'aria-label="Console"' not in setup.text  # no way on but setting it up
    secret = re.search(r'<code id="secret">([A-Z2-7]+)</code>', setup.text)
    assert secret is not None
    assert "otpauth://totp/" in setup.text and secret.group(1) in setup.text
    key = secret.group(1)
    wrong = editor.post("/admin/totp", {"secret": key, "code": "000000", "password": PASSWORD})
    assert wrong.status_code == 400 and "Wrong code" in alerts(wrong)[0]
    assert key in wrong.text  # the same key: the app has it already
    elsewhere = Console(svc)  # another session of hers (a stolen one, say)
    elsewhere.sign_in("edna@example.com")
    code = pyotp.TOTP(key).now()
    # The session alone is not enough: her password too, and guesses count as sign-ins.
    elsewhere.get("/admin/totp")
    for password in ("", "a guess at her password"):
        guess = elsewhere.post("/admin/totp", {"secret": key, "code": code, "password": password})
        assert guess.status_code == 400, guess.text
        assert alerts(guess) == ["Wrong password: type the password you sign in with."]
    edna = users.by_email(svc.engine, "edna@example.com")
    assert edna is not None and not edna.totp
    on = editor.post("/admin/totp", {"secret": key, "code": code, "password": PASSWORD})
    assert (on.status_code, on.headers["location"]) == (303, "/admin/totp?on=1")
    assert editor.get("/admin/").status_code == 200
    gone = elsewhere.get("/admin/")  # ended: from now on signing in needs the code
    assert gone.headers["location"].startswith("/admin/sign-in")

    # From now on she signs in with a code too.
    browser = Console(svc)
    step = browser.sign_in("edna@example.com")
    assert (step.status_code, step.headers["location"]) == (303, "/admin/sign-in/code")
    assert "lp_console" not in browser.http.cookies  # not signed in yet
    waiting = browser.http.cookies.get("lp_console_code", path="/admin/sign-in/code")
    assert waiting and PASSWORD not in waiting and "edna" not in waiting  # encrypted
    ask = browser.get("/admin/sign-in/code")
    assert "<h1>Your sign-in code</h1>" in ask.text
    bad = browser.post("/admin/sign-in/code", {"code": "123456"})
    assert bad.status_code == 400 and alerts(bad) == ["Wrong code."]
    again = browser.post("/admin/sign-in/code", {"code": code})  # the one that turned it on
    assert again.status_code == 400 and alerts(again) == ["Wrong code."]
    later = pyotp.TOTP(secret.group(1)).at(time.time() + 30)  # the next step's code
    good = browser.post("/admin/sign-in/code", {"code": later})
    assert (good.status_code, good.headers["location"]) == (303, "/admin/")
    assert browser.get("/admin/").status_code == 200
    # The code step without the first one (or after five minutes) starts again.
    assert Console(svc).get("/admin/sign-in/code").headers["location"] == "/admin/sign-in"

    # A role that need not use it goes straight in.
    author = Console(svc).sign_in("arthur@example.com")
    assert author.headers["location"] == "/admin/"
    entries = [(e.user_email, e.action) for e in audit.recent(svc.engine, limit=5)]
    assert entries[1:] == [
        ("edna@example.com", "signed in"),
        ("edna@example.com", "sign-in refused"),  # the code used already
        ("edna@example.com", "sign-in refused"),  # the wrong code
        ("edna@example.com", "two-factor sign-in enabled"),
    ]
    guesses = [e for e in audit.recent(svc.engine, limit=50) if "set-up" in e.action]
    assert [(e.action, e.detail) for e in guesses] == 2 * [
        ("two-factor set-up refused", "wrong password: type the password you sign in with")
    ]
