"""Errors that Letterpress raises.

    LetterpressError                 base; ``exit_code`` is what the CLI exits with
    ├── ConfigError                  a setting is missing or wrong (names the setting)
    ├── ContentError                 one or more articles are broken (carries ``Problem``s)
    ├── DisclosureError              affiliate links without a disclosure (FTC 16 CFR 255)
    ├── NotFound                     no article with that slug
    └── RenderError                  an email or page cannot be produced as configured
        └── EmailTooLarge            the HTML would be clipped by Gmail

Errors that a user can cause say where and what to do, in the form
``content/x.md:3: title is empty``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with one input, at a place a person can open."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class LetterpressError(Exception):
    exit_code = 1


class ConfigError(LetterpressError):
    exit_code = 2


class ContentError(LetterpressError):
    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class DisclosureError(LetterpressError):
    pass


class NotFound(LetterpressError):
    pass


class RenderError(LetterpressError):
    pass


class EmailTooLarge(RenderError):
    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the email HTML is {size:,} bytes, over Gmail's clipping limit of {limit:,} bytes: "
            "send fewer or shorter articles, or set LETTERPRESS_EMAIL_OVERSIZE=teaser "
            "to turn long articles into teasers"
        )
