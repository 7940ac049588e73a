"""Findings as text: the full report (``format_findings``) and the warnings the preview and
test-send commands print (``email_warnings``)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pipeline.render.emaillint.lint import finding_key, lint_html
from pipeline.render.emaillint.model import DEFAULT_CLIENTS, FeatureDB, Finding

#: What the stock email templates use on purpose, knowing Gmail or Outlook ignore it: each
#: degrades gracefully, so it is not worth a warning. Phones without media queries get the
#: 600 px layout; the hidden preheader (display:none, max-height, overflow) may show as a
#: line of text; ``<style>`` carries only those enhancements (the rest is inlined);
#: ``role`` is an ARIA hint; the doctype and ``<body>`` are replaced by the client's own.
ENHANCEMENTS = frozenset({
    "css-at-media", "css-display-none", "css-max-height", "css-overflow", "html-style",
    "html-body", "html-doctype", "html-role",
})  # fmt: skip


def format_findings(findings: Iterable[Finding]) -> str:
    """One line per finding, in a stable order (client, level, feature), no trailing newline."""
    lines = []
    for f in sorted(findings, key=finding_key):
        uses = "1 use" if f.count == 1 else f"{f.count} uses"
        line = (
            f"{f.client}: {f.level} on {', '.join(f.platforms)}: {f.title} [{f.slug}]"
            f" ({uses} in {f.where})"
        )
        if f.notes:
            line += " notes: " + " ".join(f"#{n.number} {n.text}".rstrip() for n in f.notes)
        lines.append(line)
    return "\n".join(lines)


def warning_lines(
    findings: Iterable[Finding], accepted: frozenset[str] = ENHANCEMENTS
) -> list[str]:
    """One line per unsupported finding: client family (the platforms), feature, where.

    ``"warning: outlook (windows, windows-mail) does not support display:flex
    [css-display-flex] in style attribute of <td>"``. Partial support is left out: it is
    common, and the full report (``format_findings``) has it; so are the ``accepted``
    enhancements (default: the ones the stock templates use on purpose).
    """
    return [
        f"warning: {f.client} ({', '.join(f.platforms)}) does not support {f.title}"
        f" [{f.slug}] in {f.where}"
        for f in sorted(findings, key=finding_key)
        if f.level == "unsupported" and f.slug not in accepted
    ]


def email_warnings(
    html: str, clients: Sequence[str] = DEFAULT_CLIENTS, db: FeatureDB | None = None
) -> list[str]:
    """The warnings for a rendered email's HTML: what it uses that a current platform of
    ``clients`` (default Gmail and Outlook) cannot show, by caniemail's data (default the
    packaged copy). Empty when there is nothing to say.

    Never raises: the check is advice, so if it cannot run (unreadable data, HTML the
    parser refuses) that becomes the one warning and the command goes on.
    """
    try:
        findings = lint_html(html, db, clients)
    except Exception as exc:  # advice must not stop a preview or a test send
        return [f"warning: email client support not checked ({type(exc).__name__}: {exc})"]
    return warning_lines(findings)
