"""The checks every HTTP request passes before a route sees it, as one ASGI middleware, and its metrics.

- Host header (DNS rebinding): a web page cannot reach a server on 127.0.0.1 under its own domain name, because the
  Host header must be one of the names the server is bound to or allowed (`--allowed-hosts`).
- API key: with `--api-key`, every route except /health needs `Authorization: Bearer KEY`; /metrics too, as it tells
  the load and the traffic (Prometheus scrapes with `authorization: {credentials: KEY}`). CORS preflights, which
  browsers send without credentials, pass to the CORS middleware inside; so do the web page's own static files
  (`open_paths`: a browser cannot send the key when it navigates; the page asks for it and sends it on every fetch).
- Metrics: requests are counted by matched route template ("unmatched" otherwise), method and status only.
"""

import hmac
import ipaddress
import json
import time

from starlette.routing import Match

from lmforge.server.protocol import OpenAIError

LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")
WILDCARD_BINDS = ("0.0.0.0", "::", "")
OPEN_PATHS = ("/health",)
METHODS = ("GET", "POST", "HEAD", "OPTIONS")


def allowed_host_names(bind_host: str, extra: list[str] | tuple[str, ...] = ()) -> frozenset[str] | None:
    """Host names the Host header may carry; None accepts any (a wildcard bind with no list, or '*' in `extra`)."""
    extra = [h.strip().lower() for h in extra if h.strip()]
    if "*" in extra or (bind_host in WILDCARD_BINDS and not extra):
        return None
    names = {*LOOPBACK_NAMES, *extra}
    if bind_host not in WILDCARD_BINDS:
        names.add(bind_host.lower())
    return frozenset(_bare(n) for n in names)


def _bare(host: str) -> str:
    """'[::1]:8000' -> '::1', 'Example.com:80' -> 'example.com', '127.0.0.1' -> '127.0.0.1'."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host.rstrip(".")


def route_template(routes, scope) -> str:
    for route in routes:
        match, _ = route.matches(scope)
        if match is not Match.NONE:
            return route.path
    return "unmatched"


class Guard:
    def __init__(self, app, *, routes, metrics, api_key: str | None = None, allowed_hosts: frozenset[str] | None,
                 open_paths: tuple[str, ...] = OPEN_PATHS):
        self.app, self.routes, self.metrics = app, routes, metrics
        self.api_key, self.allowed_hosts, self.open_paths = api_key, allowed_hosts, frozenset(open_paths)

    def _check(self, scope, headers: dict[bytes, bytes]) -> None:
        host = headers.get(b"host", b"").decode("latin-1")
        if self.allowed_hosts is not None and _bare(host) not in self.allowed_hosts:
            raise OpenAIError(400, f"the Host header {host[:100]!r} is not a name this server answers to (add it "
                                   "with --allowed-hosts)", code="invalid_host")
        preflight = scope["method"] == "OPTIONS" and b"access-control-request-method" in headers
        if self.api_key and scope["path"] not in self.open_paths and not preflight:
            given = headers.get(b"authorization", b"")
            if not hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
                raise OpenAIError(401, "invalid or missing API key (send 'Authorization: Bearer KEY')",
                                  code="invalid_api_key")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        status = 500

        async def send_and_record(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.observe("http_latency_seconds", time.perf_counter() - start, "time to response headers")
            await send(message)

        try:
            try:
                self._check(scope, dict(scope["headers"]))
            except OpenAIError as err:
                return await send_error(send_and_record, err)
            await self.app(scope, receive, send_and_record)
        finally:
            method = scope["method"] if scope["method"] in METHODS else "other"
            self.metrics.inc("requests_total", help="HTTP requests by route template, method and status",
                             route=route_template(self.routes, scope), method=method, status=status)


async def send_error(send, err: OpenAIError) -> None:
    body = json.dumps(err.body()).encode()
    await send({"type": "http.response.start", "status": err.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})
