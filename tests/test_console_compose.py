"""The console's articles page and composing a draft issue, against the real service
(``letterpress serve`` on SQLite and Redis, as in test_console): the articles with their
problems and engagement, creating and editing a draft with the form's own buttons, the
preview of unsaved input (the email, the inbox line, the size, the disclosure and the
warnings), the live recipient count, the roles that may not, and CSRF."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from pipeline.audience import subscribers
from pipeline.people import audit
from pipeline.render.hot import Engagement
from pipeline.render.proof import PROOFS_PER_USER, Proofs
from pipeline.sending import issues
from pipeline.sending.issues import ArticleRef
from pipeline.statuses import IssueStatus, Role, SubscriberStatus
from tests.conftest import CONTENT, SEEDS, front, write_article
from tests.service import RunningService
from tests.test_console import Console, add_user, alerts, service_for

__all__ = ["service_for"]  # a fixture, imported for pytest

FIRST, SECOND = SEEDS
IFRAME = re.compile(r'<iframe class="frame-(desktop|mobile)" sandbox="" src="([^"]+)"')


def audience(svc: RunningService) -> None:
    """Three on main (one unsubscribed), two on deals (one pending), one on both."""
    add = subscribers.add
    add(svc.engine, "a@example.com", lists=["main"], status=SubscriberStatus.ACTIVE)
    add(svc.engine, "b@example.com", lists=["main", "deals"], status=SubscriberStatus.ACTIVE)
    add(svc.engine, "c@example.com", lists=["main"], status=SubscriberStatus.UNSUBSCRIBED)
    add(svc.engine, "d@example.com", lists=["deals"], status=SubscriberStatus.PENDING)
    add(svc.engine, "e@example.com", lists=["deals"], status=SubscriberStatus.ACTIVE)


def form(**values: str | list[str]) -> dict[str, str | list[str]]:
    base: dict[str, str | list[str]] = {"subject": "", "preheader": "", "intro": ""}
    base.update(values)
    return base


def post(browser: Console, path: str, data: dict[str, str | list[str]], **kw: object):  # type: ignore[no-untyped-def]
    """A form POST with repeated fields (the Console helper takes one value a field)."""
    sent = {**data, "csrf": browser.page_token}
    headers = {"Origin": browser.svc.url, **kw.pop("headers", {})}  # type: ignore[dict-item]
    return browser.http.post(
        browser.svc.url + path, data=sent, headers=headers, timeout=30, allow_redirects=False
    )


def picks(html: str) -> list[tuple[str, str]]:
    slugs = re.findall(r'name="article" value="([^"]+)"', html)
    modes = re.findall(r'name="mode">\s*<option value="full"( selected)?', html)
    return [(s, "full" if m else "teaser") for s, m in zip(slugs, modes, strict=True)]


# -- the articles page ---------------------------------------------------------------------------


def test_the_articles_page_lists_articles_problems_and_engagement(
    database_url: str, service_for: Callable[..., RunningService], tmp_path: Path
) -> None:
    content = tmp_path / "content"
    shutil.copytree(CONTENT, content)
    write_article(content, "broken-one", front("Broken", published="2026-13-45"))
    svc = service_for(database_url, content_dir=str(content))
    add_user(svc, "vera@example.com", Role.VIEWER)
    engagement = Engagement.from_settings(svc.settings)
    assert engagement is not None
    for _ in range(3):
        engagement.record_view(SECOND)
    engagement.record_click(SECOND)

    viewer = Console(svc).signed_in("vera@example.com")
    page = viewer.get("/admin/articles")
    assert page.status_code == 200, page.text
    for slug in SEEDS:
        assert f'href="{svc.url}/articles/{slug}/"' in page.text
    assert "Vitamin K2 for Directing Calcium to Bones" in page.text
    assert "Vitamins &amp; Supplements" in page.text
    assert "published 2026-02-10" in page.text
    # The broken file, with its path:line and the message
    problems = re.findall(r"<code>([^<]*broken-one\.md:\d+)</code>\s*([^<]+)</li>", page.text)
    assert problems, page.text
    assert all(message.strip() for _, message in problems)
    # The engagement of SECOND, ranked first of the unpinned by it
    card = page.text.split(f'id="article-{SECOND}"')[1].split("</li>")[0]
    assert "Views 3.0 · clicks 3.0" in card  # weighted: a click counts three views
    assert re.search(r"hot rank \d+", card)
    nav = page.text.split("</nav>")[0]
    assert 'href="/admin/articles" aria-current="page"' in nav and 'href="/admin/issues"' in nav


# -- composing ----------------------------------------------------------------------------------


def test_an_author_composes_a_draft_and_it_is_saved_as_asked(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    audience(svc)
    author = add_user(svc, "ann@example.com", Role.AUTHOR)
    browser = Console(svc).signed_in("ann@example.com")

    page = browser.get("/admin/issues/new")
    assert page.status_code == 200, page.text
    assert page.headers["vary"] == "HX-Request"
    assert "frame-src 'self'" in page.headers["content-security-policy"]
    for field in ("subject", "preheader", "intro", "add"):
        assert f'<label for="{field}"' in page.text

    # Add both seeds (no save yet): the first comes in full, the second as a teaser.
    typed = form(subject="K2 week", preheader="Bones, arteries", intro="<p>Hello</p>")
    step = post(browser, "/admin/issues/new", {**typed, "do": "add", "add": FIRST})
    assert step.status_code == 200
    assert picks(step.text) == [(FIRST, "full")]
    step = post(
        browser,
        "/admin/issues/new",
        {**typed, "article": [FIRST], "mode": ["full"], "do": "add", "add": SECOND},
    )
    assert picks(step.text) == [(FIRST, "full"), (SECOND, "teaser")]
    assert issues.list_issues(svc.engine) == []  # nothing saved by the form's buttons

    # Move the second up, make it a teaser / the other full, tick the deals list, save.
    two = {"article": [FIRST, SECOND], "mode": ["full", "teaser"]}
    step = post(browser, "/admin/issues/new", {**typed, **two, "do": "up-1"})
    assert picks(step.text) == [(SECOND, "teaser"), (FIRST, "full")]
    saved = post(
        browser,
        "/admin/issues/new",
        {
            **typed,
            "article": [SECOND, FIRST],
            "mode": ["full", "teaser"],
            "audience": ["deals"],
            "do": "save",
        },
    )
    assert saved.status_code == 303, saved.text
    issue_id = int(saved.headers["location"].split("/")[3])
    assert saved.headers["location"] == f"/admin/issues/{issue_id}/edit?saved=1"
    issue = issues.get(svc.engine, issue_id)
    assert issue.status == IssueStatus.DRAFT
    assert (issue.subject, issue.preheader, issue.intro) == (
        "K2 week",
        "Bones, arteries",
        "<p>Hello</p>",
    )
    assert issue.articles == [ArticleRef(SECOND, True), ArticleRef(FIRST, False)]
    assert issue.audience == ["deals"]

    # Edit it: back in the other order, both full, to main and deals.
    edit = browser.get(f"/admin/issues/{issue_id}/edit?saved=1")
    assert edit.status_code == 200
    assert f"Saved draft issue {issue_id}." in edit.text
    assert picks(edit.text) == [(SECOND, "full"), (FIRST, "teaser")]
    assert re.search(r'value="deals" checked', edit.text)
    path = f"/admin/issues/{issue_id}/edit"
    down = post(
        browser,
        path,
        {**typed, "article": [SECOND, FIRST], "mode": ["full", "full"], "do": "down-0"},
    )
    assert picks(down.text) == [(FIRST, "full"), (SECOND, "full")]
    again = post(
        browser,
        path,
        {
            **typed,
            "subject": "K2 week, again",
            "article": [FIRST, SECOND],
            "mode": ["full", "full"],
            "audience": ["main", "deals"],
            "do": "save",
        },
    )
    assert again.status_code == 303
    issue = issues.get(svc.engine, issue_id)
    assert issue.subject == "K2 week, again"
    assert issue.articles == [ArticleRef(FIRST, True), ArticleRef(SECOND, True)]
    assert issue.audience == ["main", "deals"]
    log = [(e.user_email, e.action) for e in audit.recent(svc.engine)[:2]]
    assert log == [(author.email, "issue edited"), (author.email, "issue created")]

    # A bad save says why and changes nothing.
    bad = post(browser, path, {**typed, "subject": " ", "article": [FIRST], "mode": ["full"]})
    assert bad.status_code == 400
    assert alerts(bad) == ["An issue needs a subject."]
    assert issues.get(svc.engine, issue_id).subject == "K2 week, again"

    # Listed; once it is no longer a draft it cannot be edited (409), and is not.
    listing = browser.get("/admin/issues")
    assert f'href="/admin/issues/{issue_id}/edit"' in listing.text
    issues.schedule(svc.engine, issue_id, None)
    assert browser.get(path).status_code == 409
    refused = post(
        browser, path, {**typed, "subject": "Changed", "article": [FIRST], "mode": ["full"]}
    )
    assert refused.status_code == 409
    assert issues.get(svc.engine, issue_id).subject == "K2 week, again"
    assert f'href="/admin/issues/{issue_id}/edit"' not in browser.get("/admin/issues").text


def test_the_preview_renders_unsaved_input(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "ed@example.com", Role.EDITOR)
    browser = Console(svc).signed_in("ed@example.com")
    browser.get("/admin/issues/new")
    data = form(
        subject="Unsaved subject",
        preheader="A preheader " * 20,
        intro="<p>An intro typed just now</p>",
        article=[FIRST, SECOND],
        mode=["full", "teaser"],
    )
    answer = post(browser, "/admin/compose/preview", data, headers={"HX-Request": "true"})
    assert answer.status_code == 200, answer.text
    assert answer.headers["vary"] == "HX-Request"
    assert "<html" not in answer.text and "<h3>In the inbox</h3>" in answer.text  # a fragment
    inbox = answer.text.split('id="inbox"')[1].split("</div>")[0]
    assert "Unsaved subject" in inbox and svc.settings.sender_email in inbox
    assert "A preheader A preheader" in inbox and "…" in inbox  # cut as an inbox cuts it
    size = re.search(
        r'id="size"[^>]*>([\d,]+) bytes of HTML: (\d+)% of Gmail\'s clip at ([\d,]+)', answer.text
    )
    assert size is not None
    assert int(size.group(3).replace(",", "")) == svc.settings.email_clip_bytes
    assert int(size.group(1).replace(",", "")) > 1000
    notices = answer.text.split('id="notices"')[1].split("</ul>")[0]
    assert "Disclaimer of “Vitamin K2 for Directing Calcium to Bones”" in notices
    assert "Affiliate disclosure: at the top, before the first article" in notices
    assert "above Gmail's clip" in notices and "below" not in notices
    assert 'id="warnings"' in answer.text
    assert "Plain text" in answer.text and "An intro typed just now" in answer.text

    # The frames: the email itself, sandboxed, with a policy of its own.
    frames = IFRAME.findall(answer.text)
    assert sorted(kind for kind, _ in frames) == ["desktop", "mobile"]
    email = browser.get(frames[0][1])
    assert email.status_code == 200
    assert "An intro typed just now" in email.text and "Unsaved subject" in email.text
    assert "%%" not in email.text  # the preview's merge fields are filled in
    csp = email.headers["content-security-policy"]
    assert "sandbox" in csp and "script-src" not in csp and "default-src 'none'" in csp
    assert email.headers["x-frame-options"] == "SAMEORIGIN"
    assert 'width="600"' in answer.text and 'width="375"' in answer.text
    # Another user cannot load it.
    add_user(svc, "other@example.com", Role.EDITOR)
    other = Console(svc).signed_in("other@example.com")
    assert "An intro typed just now" not in other.get(frames[0][1]).text
    assert issues.list_issues(svc.engine) == []  # nothing was saved

    # A draft that cannot render says why.
    broken = post(
        browser, "/admin/compose/preview", form(subject="x"), headers={"HX-Request": "true"}
    )
    assert "Pick at least one article." in broken.text


def test_the_recipient_count_matches_the_audience(
    database_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(database_url)
    audience(svc)
    add_user(svc, "ann@example.com", Role.AUTHOR)
    browser = Console(svc).signed_in("ann@example.com")

    def count(*lists: str) -> str:
        query = "&".join(f"audience={name}" for name in lists)
        answer = browser.get(f"/admin/compose/recipients?{query}", headers={"HX-Request": "true"})
        assert answer.status_code == 200
        return answer.text.strip()

    assert count("main") == "2 recipients if it were sent now."  # a, b (c unsubscribed)
    assert count("deals") == "2 recipients if it were sent now."  # b, e (d pending)
    assert count("main", "deals") == "3 recipients if it were sent now."
    assert count() == "3 recipients if it were sent now."  # no list: everyone
    assert count("nobody") == "0 recipients if it were sent now."
    page = browser.get("/admin/issues/new")
    assert 'id="recipients" class="count" role="status">3 recipients' in page.text
    assert 'hx-get="/admin/compose/recipients"' in page.text


def test_a_viewer_may_not_compose_and_nothing_changes(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "vera@example.com", Role.VIEWER)
    draft_id = issues.create(svc.engine, subject="Kept", articles=[ArticleRef(FIRST, True)])
    viewer = Console(svc).signed_in("vera@example.com")
    assert viewer.get("/admin/issues").status_code == 200
    assert "/admin/issues/new" not in viewer.get("/admin/issues").text
    for path in (
        "/admin/issues/new",
        f"/admin/issues/{draft_id}/edit",
        "/admin/compose/recipients",
    ):
        answer = viewer.get(path)
        assert answer.status_code == 403, path
        assert "You cannot compose issues" in answer.text
    data = form(subject="Changed", article=[FIRST], mode=["full"], do="save")
    for path in ("/admin/issues/new", f"/admin/issues/{draft_id}/edit", "/admin/compose/preview"):
        assert post(viewer, path, data).status_code == 403, path
    assert [i.subject for i in issues.list_issues(svc.engine)] == ["Kept"]
    assert not [e for e in audit.recent(svc.engine) if e.action.startswith("issue")]


def test_a_post_without_the_csrf_token_is_refused(
    sqlite_url: str, service_for: Callable[..., RunningService]
) -> None:
    svc = service_for(sqlite_url)
    add_user(svc, "ed@example.com", Role.EDITOR)
    browser = Console(svc).signed_in("ed@example.com")
    browser.get("/admin/issues/new")
    data = {"subject": "Forged", "article": FIRST, "mode": "full", "do": "save"}
    assert browser.post("/admin/issues/new", data, token=None).status_code == 403
    assert browser.post("/admin/issues/new", data, token="wrong").status_code == 403
    assert browser.post("/admin/issues/new", data, origin="https://evil.example").status_code == 403
    assert browser.post("/admin/compose/preview", data, token=None).status_code == 403
    assert issues.list_issues(svc.engine) == []
    assert browser.post("/admin/issues/new", data).status_code == 303  # with it, it works


@pytest.mark.parametrize("where", ["redis", "process"])
def test_proofs_are_kept_per_user_and_only_the_newest(
    where: str, redis_client: redis.Redis
) -> None:
    """Each edit makes a proof: a user's newest PROOFS_PER_USER are kept, the rest go,
    so typing for an hour does not fill Redis; a proof is only its maker's."""
    store = Proofs(redis_client if where == "redis" else None, "lp-proofs-test")
    tokens = [store.put(7, f"<p>edit {n}</p>") for n in range(PROOFS_PER_USER + 3)]
    other = store.put(8, "<p>another user's</p>")
    kept = [n for n, token in enumerate(tokens) if store.get(7, token) is not None]
    if where == "redis":
        assert kept == list(range(3, PROOFS_PER_USER + 3))
        assert len(redis_client.keys("lp-proofs-test:console:proof:*")) == PROOFS_PER_USER + 1
    else:  # one process keeps the newest PROOFS_KEPT of everyone's
        assert kept == list(range(PROOFS_PER_USER + 3))
    assert store.get(7, tokens[-1]) == f"<p>edit {PROOFS_PER_USER + 2}</p>"
    assert store.get(7, other) is None and store.get(8, other) == "<p>another user's</p>"
