"""Links between the pages of the site: relative to the page (as MkDocs makes them), so
the site works opened from disk and served from any sub-path; absolute (from
``base_url``) only for what other machines read. The favicon is found here too."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from pipeline.errors import ConfigError
from pipeline.render.markup import parse_fragment, serialize_fragment
from pipeline.settings import Settings

FAVICON_TYPES = {".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon"}
PAGE_FOLDERS = ("articles", "category", "series")  # the folders of pages the build makes


def _split(url: str) -> tuple[str, str]:
    """A URL's path, and its query and fragment (with their '?' or '#')."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    return url[:cut], url[cut:]


def relative_url(page: str, target: str, directory_urls: bool) -> str:
    """The link from the page written at ``page`` (``articles/x/index.html``) to the site
    path ``target``: a folder of pages when it is empty (the home page) or ends in '/',
    else a file. A query or fragment is kept. A folder is linked as its ``index.html``
    (a browser shows a listing for a folder on disk), or with a '/' at the end when
    ``directory_urls`` is on (a server answers it with the index)."""
    path, tail = _split(target)
    here = page.split("/")[:-1]
    folder = path == "" or path.endswith("/")
    parts = [p for p in path.split("/") if p]
    name: list[str] = []
    if not folder:
        parts, name = parts[:-1], parts[-1:]
    elif not directory_urls:
        name = ["index.html"]
    common = 0
    while common < min(len(here), len(parts)) and here[common] == parts[common]:
        common += 1
    link = "/".join([".."] * (len(here) - common) + parts[common:] + name)
    if folder and directory_urls:
        link = link + "/" if link else "./"
    return link + tail


def site_path(settings: Settings, url: str) -> str | None:
    """The path within the site ('' is the home page) that a URL written in an article
    points at, or None when it leads elsewhere: another site, ``mailto:``, an anchor on
    the same page. As for emails, a URL without a scheme is from the site's root."""
    url = url.strip()
    base = settings.base_url
    if not url or url.startswith(("#", "?", "//")):
        return None
    if url == base or url.startswith((base + "/", base + "?", base + "#")):
        return url[len(base) :].lstrip("/")
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        return None
    return None if scheme else url.lstrip("/")


@dataclass(frozen=True)
class PageLinks:
    """Links from one page of the site (``page`` is where it is written)."""

    settings: Settings
    page: str

    def __call__(self, target: str) -> str:
        """To a page (``articles/x/``, '' for home) or a file (``feed.xml``) of the site."""
        return relative_url(self.page, target, self.settings.directory_urls)

    def content(self, url: str) -> str:
        """A URL written in an article (a link, an image): relative when it is a page of
        the site or a file it serves (``/images/x.png``); absolute when it is a route of
        the subscriber service at ``base_url`` (``/subscribe``); else as written."""
        target = site_path(self.settings, url)
        if target is None:
            return url
        path, tail = _split(target)
        folder = path.strip("/")
        if "." in folder.rsplit("/", 1)[-1]:
            return self(target)  # a file
        if not folder or folder.split("/")[0] in PAGE_FOLDERS:
            return self((folder + "/" if folder else "") + tail)
        return f"{self.settings.base_url}/{target}"

    def html(self, fragment: str) -> str:
        """An article's HTML with its links and images as ``content`` makes them."""
        if "href=" not in fragment and "src=" not in fragment:
            return fragment
        root = parse_fragment(fragment)
        for el in root.iter("a", "img"):
            attr = "href" if el.tag == "a" else "src"
            value = el.get(attr)
            if value:
                el.set(attr, self.content(value))
        return serialize_fragment(root)


def absolute_url(settings: Settings, url: str) -> str:
    """A URL written in an article, made absolute (for Open Graph and JSON-LD)."""
    if "://" in url:
        return url
    if url.startswith("//"):
        return "https:" + url
    return settings.base_url + "/" + url.lstrip("/")


def favicon_path(settings: Settings) -> str:
    """Where the build writes the favicon in the site."""
    suffix = Path(settings.favicon).suffix.lower() if settings.favicon else ".svg"
    return f"assets/favicon{suffix}"


def favicon_bytes(settings: Settings) -> bytes:
    """The favicon: the file the setting names (from the working folder), or the
    default of the templates."""
    path = Path(settings.favicon) if settings.favicon else None
    if path is None:
        path = settings.templates_dir / "web" / "favicon.svg"
    elif path.suffix.lower() not in FAVICON_TYPES:
        raise ConfigError(f"setting favicon: {path} is not an .svg, .png or .ico file")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"setting favicon: cannot read {path} ({exc.strerror})") from None
