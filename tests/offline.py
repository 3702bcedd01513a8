"""What a served page would fetch: every URL in its attributes, inline scripts and styles (and
in the CSS it links), so a test can refuse any other host and fetch the local ones."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from urllib.parse import urlsplit

# Attributes that are identifiers, not something a browser fetches (SVG namespaces).
NOT_FETCHED = ("xmlns",)
# Quoted absolute paths and URLs in scripts: '/openapi.json', "https://cdn...".
SCRIPT_URL = re.compile(r"""["'`]((?:[a-z][a-z0-9+.-]*:)?//[^"'`\s]+|/[^/"'`\s][^"'`\s]*)["'`]""")
CSS_URL = re.compile(r"""url\(\s*["']?([^"')\s]+)|@import\s+["']([^"']+)""")
URL_ATTRIBUTES = {"src", "href", "action", "formaction", "poster", "data", "spec-url"}
INLINE_SCHEMES = ("data:", "blob:", "about:", "javascript:", "#")


class _Urls(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in = tag if tag in ("script", "style") else None
        for name, value in attrs:
            if value is None or name.startswith(NOT_FETCHED):
                continue
            if name == "srcset":
                self.urls += [part.split()[0] for part in value.split(",") if part.strip()]
            elif name == "style":
                self.urls += css_urls(value)
            elif name in URL_ATTRIBUTES or _looks_like_url(value):
                self.urls.append(value.strip())

    def handle_endtag(self, tag: str) -> None:
        self._in = None

    def handle_data(self, data: str) -> None:
        if self._in == "style":
            self.urls += css_urls(data)
        elif self._in == "script":
            self.urls += [m[1] for m in SCRIPT_URL.finditer(data)]


def _looks_like_url(value: str) -> bool:
    v = value.strip()
    return (
        "://" in v
        or v.startswith(("/", "./", "../", "//"))
        or bool(re.fullmatch(r"[\w./-]+\.(js|css|png|svg|ico|woff2?|ttf|json|html)(\?.*)?", v))
    )


def css_urls(css: str) -> list[str]:
    return [a or b for a, b in CSS_URL.findall(css)]


def page_urls(html: str) -> list[str]:
    parser = _Urls()
    parser.feed(html)
    return parser.urls


def is_external(url: str) -> bool:
    """An absolute URL with a host, or a protocol-relative one: another server."""
    parts = urlsplit(url.strip())
    return bool(parts.netloc) or url.strip().startswith("//")


def local_urls(urls: list[str]) -> list[str]:
    return [u for u in urls if not is_external(u) and not u.startswith(INLINE_SCHEMES)]
