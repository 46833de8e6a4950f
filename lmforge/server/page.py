"""The web chat page at `/` (static files in lmforge/server/static, shipped inside the package) and `/stats`.

The page is a few hand-written files: no CDN, no build step. Its Content-Security-Policy allows scripts only from
this server's own files (no inline script, no event-handler attributes, no eval), so even text that reached the DOM
as HTML could not run; the page itself only ever inserts text nodes. The page and its files are public (a browser
cannot send a bearer token when it navigates); everything it fetches (/v1/*, /stats) still needs the API key.
"""

from importlib.resources import files

from fastapi import FastAPI
from fastapi.responses import Response

from lmforge.server.protocol import OpenAIError

STATIC = files("lmforge.server") / "static"
ASSETS = {  # URL path -> (file, media type); nothing else is served, so no path can reach another file
    "/": ("index.html", "text/html; charset=utf-8"),
    **{f"/static/{name}": (name, "text/javascript; charset=utf-8")
       for name in ("api.js", "markdown.js", "settings.js", "app.js")},
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}
PAGE_PATHS = tuple(ASSETS)  # open without the API key (guard.py)
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY",
           "Referrer-Policy": "no-referrer", "Cache-Control": "no-cache"}


def page_asset(path: str) -> Response:
    name, media_type = ASSETS[path]
    try:
        body = (STATIC / name).read_bytes()
    except OSError:  # an install without its package data: say so rather than answer an empty page
        raise OpenAIError(500, f"the web page's file {name} is missing from this lmforge install",
                          type_="server_error") from None
    return Response(body, media_type=media_type, headers=HEADERS)


def _serve(path: str):
    def endpoint() -> Response:  # no parameters: nothing in the request chooses the file
        return page_asset(path)
    return endpoint


def add_page_routes(app: FastAPI, stats) -> None:
    """GET / and its static files; GET /stats: the engine's figures (`stats()` -> EngineStats) as JSON."""
    for path in ASSETS:
        app.add_api_route(path, _serve(path), methods=["GET"], include_in_schema=False)

    @app.get("/stats")
    async def engine_stats():
        return stats().as_dict()
