"""The chat page: `GET /` in a browser (anything that asks for HTML) gets `static/index.html`; its scripts, styles
and the vendored Markdown renderer and highlighter are under `/ui/`. Nothing is fetched from elsewhere: the
Content-Security-Policy allows only this server (scripts, styles, API calls), so even a bug that let model output
through as HTML could not load or send anything.

These files are public (no API key needed to load them): they hold no data, and the page asks for the key itself
(`<meta name="localseek-key">` says whether the server wants one) before it calls the API."""

from __future__ import annotations

import hashlib
import mimetypes
from functools import cache
from pathlib import Path

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from localseek import __version__
from localseek.serve.errors import HTTPError

STATIC = Path(__file__).parent / "static"
ASSET_PREFIX = "/ui/"
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml",
          ".html": "text/html; charset=utf-8", ".txt": "text/plain; charset=utf-8", ".md": "text/plain; charset=utf-8"}


def is_public(method: str, path: str) -> bool:
    """What the API key does not guard: the page itself and its files."""
    return method in ("GET", "HEAD") and (path == "/" or path.startswith(ASSET_PREFIX))


@cache
def _assets() -> dict[str, tuple[bytes, str, str]]:
    """Every file under static/ by its URL path: (bytes, content type, ETag). Read once; a fixed set, so a path
    the server was not shipped with is a 404 whatever it contains (`..` included)."""
    out = {}
    for path in sorted(STATIC.rglob("*")):
        if path.is_file() and path.name != "index.html":
            data = path.read_bytes()
            kind = _TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
            out[ASSET_PREFIX + path.relative_to(STATIC).as_posix()] = (data, kind, _etag(data))
    return out


def _etag(data: bytes) -> str:
    return '"' + hashlib.sha256(data).hexdigest()[:32] + '"'


@cache
def _index(key_required: bool) -> bytes:
    text = (STATIC / "index.html").read_text(encoding="utf-8")
    return text.replace("__VERSION__", __version__).replace("__KEY__", "required" if key_required else "none") \
        .encode()


def _send(request: Request, data: bytes, kind: str, etag: str) -> Response:
    headers = {**HEADERS, "ETag": etag}
    if request.headers.get("if-none-match") == etag:
        return Response(status_code=304, headers=headers)
    return Response(data, media_type=kind, headers=headers)


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


async def root(request: Request) -> Response:
    """The page for browsers; `localseek is running` for everything else (Ollama clients probe `/`)."""
    if not wants_html(request):
        return PlainTextResponse("localseek is running")
    data = _index(bool(request.app.state.config.api_key))
    return _send(request, data, "text/html; charset=utf-8", _etag(data))


async def asset(request: Request) -> Response:
    found = _assets().get(request.url.path)
    if found is None:
        raise HTTPError(404, f"No such file: {request.url.path}.", type="not_found")
    return _send(request, *found)
