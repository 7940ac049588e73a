"""The email variant: layout, inlined CSS, plain text, MIME, size and disclosures."""

from __future__ import annotations

import email
import re
from collections.abc import Callable
from email import policy
from pathlib import Path

import lxml.html
import pytest
from click.testing import CliRunner

from pipeline.cli.main import main
from pipeline.content.store import FileContentStore
from pipeline.errors import DisclosureError, EmailTooLarge
from pipeline.merge import personalise
from pipeline.render.emails import EmailRenderer, RenderedEmail
from pipeline.settings import Settings, load_settings
from tests.conftest import SEEDS, front, write_article


def render(settings: Settings, folder: Path, slugs: list[str], **kw: object) -> RenderedEmail:
    catalog = FileContentStore(folder, settings).catalog()
    return EmailRenderer(settings).render(catalog, slugs, **kw)  # type: ignore[arg-type]


def test_seed_email_layout(settings: Settings, content_dir: Path) -> None:
    mail = render(settings, content_dir, list(SEEDS))
    doc = lxml.html.fromstring(mail.html)
    assert mail.html.startswith("<!DOCTYPE html>")
    container = doc.xpath("//table[contains(@class,'container')]")[0]
    assert container.get("width") == "600"
    assert "width:600px" in container.get("style").replace(" ", "")
    # inlined: the heading keeps its look where <style> is stripped
    h1 = doc.xpath("//h1")[0]
    assert "font-size:26px" in h1.get("style").replace(" ", "")
    style = doc.xpath("//style")[0].text
    assert "@media only screen and (max-width: 620px)" in style and "!important" in style
    assert doc.xpath("//div[@class='preheader']")[0].text_content() == (
        "Vitamin K2 plays a crucial role in directing calcium to the bones where it belongs."
    )
    links = {a.text_content(): a.get("href") for a in doc.xpath("//a")}
    assert links["View in browser"].startswith(
        "https://news.example.org/articles/vitamin-k2-for-directing-calcium-to-bones/?utm_source=newsletter"
    )
    assert links["Unsubscribe"] == "%%unsubscribe_url%%"
    assert "1 Test Street, Testville" in doc.text_content()
    # the second seed is a teaser card; hot articles exclude both seeds
    cards = [c.text_content() for c in doc.xpath("//td[contains(@class,'card')]//h3")]
    assert cards[0] == "The Role of Vitamin K2 in Calcium Distribution"
    assert cards[1:] == ["Early Warning Signs You Ignore",
                         "Anxiety Without a Trigger: Could It Be a Magnesium…",
                         "Burning Feet at Night? Check These Vitamin Deficiencies",
                         "Poor Appetite but Constant Fatigue"]  # fmt: skip
    assert mail.html.count("Read More →") == 5


def test_disclosure_comes_before_the_first_affiliate_link(
    settings: Settings, content_dir: Path
) -> None:
    write_article(content_dir, "deal", front("Deal"),
                  "Intro.\n\n[Get it](https://www.amazon.com/dp/B0?tag=x-20)\n")  # fmt: skip
    mail = render(settings, content_dir, ["deal", SEEDS[0]])
    html = mail.html
    assert html.index(settings.affiliate_disclosure) < html.index("amazon.com")
    assert mail.text.index("Affiliate disclosure:") < mail.text.index("amazon.com")
    # cloaked links (affiliate: true) carry the disclosure too, even as a teaser
    teaser = render(settings, content_dir, [SEEDS[0], SEEDS[1]])
    assert teaser.has_affiliate and settings.affiliate_disclosure in teaser.html
    plain = render(settings, content_dir, [SEEDS[0], "early-warning-signs-you-ignore"])
    assert not plain.has_affiliate and "Affiliate disclosure" not in plain.html


def test_disclosure_switched_off_refuses_to_render(settings: Settings, content_dir: Path) -> None:
    write_article(content_dir, "deal", front("Deal", disclosure="false"),
                  "[Get it](https://amzn.to/abc)\n")  # fmt: skip
    with pytest.raises(DisclosureError, match="disclosure is switched off"):
        render(settings, content_dir, ["deal"])


def test_plain_text_part_wraps_and_keeps_every_link(settings: Settings, content_dir: Path) -> None:
    write_article(
        content_dir, "links", front("Links"),
        "A long paragraph " * 20 + "with [a link](https://en.wikipedia.org/wiki/Vitamin_K2) "
        "and [another](/articles/early-warning-signs-you-ignore/).\n\n- a list item " + "x " * 50 + "\n",
    )  # fmt: skip
    mail = render(settings, content_dir, ["links", SEEDS[0]], full_articles=2)
    for line in mail.text.splitlines():
        assert len(line) <= 78 or re.fullmatch(r"(\[\d+\] )?\S+", line), line
    hrefs = {a.get("href") for a in lxml.html.fromstring(mail.html).xpath("//a[@href]")}
    for href in hrefs:
        assert href in mail.text, href
    assert "a link [1]" in mail.text


def test_utm_only_on_links_to_the_site(settings: Settings, content_dir: Path) -> None:
    write_article(content_dir, "links", front("Links"),
                  "[in](/articles/early-warning-signs-you-ignore/#x) [out](https://example.com/a?b=1)\n")  # fmt: skip
    mail = render(settings, content_dir, ["links"], campaign="issue-7")
    hrefs = [
        a.get("href") for a in lxml.html.fromstring(mail.html).xpath("//td[@class='content']//a")
    ]
    assert ("https://news.example.org/articles/early-warning-signs-you-ignore/?utm_source=newsletter"
            "&utm_medium=email&utm_campaign=issue-7#x") in hrefs  # fmt: skip
    assert "https://example.com/a?b=1" in hrefs


def test_gmail_clipping_limit(make_settings: Callable[..., Settings], content_dir: Path) -> None:
    long_body = "\n\n".join(f"Paragraph {i} " + "words " * 60 for i in range(400))
    write_article(content_dir, "long", front("Long"), long_body)
    with pytest.raises(EmailTooLarge, match="over Gmail's clipping limit of 102,000 bytes"):
        render(make_settings(), content_dir, ["long"])
    mail = render(make_settings(email_oversize="teaser"), content_dir, ["long"])
    assert mail.size < 102_000 and "Read More →" in mail.html and "Paragraph 399" not in mail.html


def test_preview_writes_a_complete_mime_message(content_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('postal_address = "1 Test Street"\nsender_email = "news@example.org"\n')
    out = tmp_path / "email"
    result = CliRunner().invoke(main, ["--config", str(config), "preview", *SEEDS,
                                       "--content", str(content_dir), "--subject",
                                       "K2 <special> issue", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[:3] == [str(out / n) for n in
                                              ("email.html", "email.txt", "message.eml")]  # fmt: skip
    message = email.message_from_bytes((out / "message.eml").read_bytes(), policy=policy.default)
    assert message["Subject"] == "K2 <special> issue"
    assert message["From"] == "Letterpress <news@example.org>"
    assert message["Date"] and message["Message-ID"].endswith("@example.org>")
    assert message.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in message.iter_parts()]
    assert parts == ["text/plain", "text/html"]
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    assert "K2 &lt;special&gt; issue" in html
    text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
    assert (out / "email.txt").read_text() == text.replace("\r\n", "\n")


def _assert_a_working_preview(out: Path, base_url: str) -> None:
    """No merge field left anywhere; personal links lead to the preview pages; the message
    carries the one-click headers a sent message carries."""
    raw = (out / "message.eml").read_bytes()
    for name in ("email.html", "email.txt", "message.eml"):
        assert b"%%" not in (out / name).read_bytes(), name
    html = (out / "email.html").read_text()
    hrefs = set(lxml.html.fromstring(html).xpath("//a/@href"))
    assert f"{base_url}/preview/unsubscribe" in hrefs
    assert f"{base_url}/preview/preferences" in hrefs
    assert f"{base_url}/preview/unsubscribe" in (out / "email.txt").read_text()
    message = email.message_from_bytes(raw, policy=policy.default)
    assert message["List-Unsubscribe"] == f"<{base_url}/preview/unsubscribe>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert all("/r/" not in href for href in hrefs)  # no redirect without a token


def test_preview_has_no_dead_links_and_carries_the_unsubscribe_headers(
    content_dir: Path, tmp_path: Path
) -> None:
    config = tmp_path / "c.toml"
    config.write_text('base_url = "https://news.example.org"\npostal_address = "1 Test St"\n')
    out = tmp_path / "email"
    result = CliRunner().invoke(main, ["--config", str(config), "preview", *SEEDS,
                                       "--content", str(content_dir), "--subject",
                                       "News for %%name%%", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 0, result.output
    _assert_a_working_preview(out, "https://news.example.org")
    message = email.message_from_bytes((out / "message.eml").read_bytes(), policy=policy.default)
    assert message["Subject"] == "News for "  # the (empty) name of a subscriber without one


def test_issue_preview_before_and_after_the_send_starts(
    content_dir: Path, tmp_path: Path, sqlite_url: str
) -> None:
    from datetime import timedelta

    from pipeline.sending import issues
    from pipeline.sending.issues import ArticleRef
    from pipeline.sending.parts import SendingParts
    from pipeline.sending.prepare import prepare

    config = tmp_path / "c.toml"
    config.write_text(
        f'base_url = "https://news.example.org"\ndatabase_url = "{sqlite_url}"\n'
        f'content_dir = "{content_dir}"\npostal_address = "1 Test Street"\n'
    )
    rt = SendingParts(load_settings(config))
    issue_id = issues.create(
        rt.engine, subject="K2", articles=[ArticleRef(SEEDS[0], True), ArticleRef(SEEDS[1], False)]
    )
    for started in (False, True):
        if started:  # now the frozen, click-tracked snapshot is what a preview shows
            issues.schedule(rt.engine, issue_id, None)
            issues.claim_due(rt.engine, timedelta(hours=6))
            prepare(rt.engine, rt.settings, rt.catalog(), issue_id, 100)
        out = tmp_path / f"issue-{started}"
        result = CliRunner().invoke(main, ["--config", str(config), "issue", "preview",
                                           str(issue_id), "--out", str(out)])  # fmt: skip
        assert result.exit_code == 0, result.output
        _assert_a_working_preview(out, "https://news.example.org")
        html = (out / "email.html").read_text()
        assert f"https://news.example.org/articles/{SEEDS[0]}/" in html


def test_personalise_fills_merge_fields() -> None:
    assert personalise("a %%unsubscribe_url%% b %%x%%", {"unsubscribe_url": "U"}) == "a U b %%x%%"


def test_five_article_email_with_all_in_full(settings: Settings, content_dir: Path) -> None:
    slugs = [a.stem for a in sorted(content_dir.glob("*.md"))][:5]
    mail = render(settings, content_dir, slugs, full_articles=5)
    assert lxml.html.fromstring(mail.html).xpath("count(//td[@class='content'])") == 5
    assert mail.size < 102_000


def test_video_embeds_become_escaped_links(settings: Settings, content_dir: Path) -> None:
    evil = "&lt;img src=x onerror=alert(1)&gt;"
    write_article(content_dir, "video", front("Video"),
                  f'<iframe src="https://www.youtube-nocookie.com/embed/x" title="{evil}"></iframe>\n')  # fmt: skip
    mail = render(settings, content_dir, ["video"])
    assert "<iframe" not in mail.html and "<img src=x" not in mail.html
    doc = lxml.html.fromstring(mail.html)
    link = doc.xpath("//a[@href='https://www.youtube-nocookie.com/embed/x']")[0]
    assert link.text_content() == "<img src=x onerror=alert(1)>"  # shown as text, not markup


def test_no_email_without_a_postal_address(
    make_settings: Callable[..., Settings], content_dir: Path
) -> None:
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="CAN-SPAM requires the sender's physical postal address"):
        render(make_settings(postal_address=""), content_dir, [SEEDS[0]])


def test_front_matter_is_escaped_in_the_email(settings: Settings, content_dir: Path) -> None:
    evil = "<script>alert(1)</script>"
    for slug in ("evil-one", "evil-two"):
        write_article(
            content_dir, slug,
            f"title: '{evil}'\ncategory: '<b>Cat</b>'\nsubtitle: '\"><img src=x onerror=alert(1)>'\n"
            "summary: '<i>sum</i>'\nstatus: published\npublished: 2026-06-01",
        )  # fmt: skip
    mail = render(settings, content_dir, ["evil-one", "evil-two"], subject=evil, preheader=evil)
    assert "<script>" not in mail.html and "<img src=x" not in mail.html
    assert "<b>Cat</b>" not in mail.html and "<i>sum</i>" not in mail.html
    assert (
        mail.html.count("&lt;script&gt;alert(1)&lt;/script&gt;") >= 4
    )  # title, subject, preheader, card
    assert evil in mail.text  # the plain-text part shows the text as written
