"""Issue 20 item 5: a web page cannot drive a keyless server on 127.0.0.1. The Host header must name the server
(DNS rebinding), POST bodies must be application/json (a text/plain "simple request" skips the CORS preflight),
and CORS answers only the origins given with --cors-origins."""

import httpx
import pytest

from lmforge.server.guard import allowed_host_names
from tests.cli_util import run_cli
from tests.server_util import live_server
from tests.unit.server.conftest import MODEL, chat, post

ORIGIN = "https://app.example"


@pytest.fixture(scope="module")
def server(lm):
    hosts = allowed_host_names("127.0.0.1", ["models.internal"])
    with live_server(lm, name=MODEL, allowed_hosts=hosts, cors_origins=[ORIGIN]) as (url, _):
        yield url


@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "127.0.0.1.evil.example", "", "[::2]"])
def test_a_foreign_host_header_is_refused(server, host):
    for r in (httpx.get(server + "/v1/models", headers={"Host": host}),
              post(server, "/v1/chat/completions", chat(max_tokens=2), headers={"Host": host})):
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_host", (host, r.text)


@pytest.mark.parametrize("host", ["127.0.0.1:1234", "localhost", "LOCALHOST:80", "[::1]:8000", "models.internal"])
def test_the_bound_and_allowed_names_pass(server, host):
    assert httpx.get(server + "/v1/models", headers={"Host": host}).status_code == 200


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          None])
def test_post_bodies_must_be_json(server, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    r = httpx.post(server + "/v1/chat/completions", content=b'{"model": "tiny", "messages": '
                   b'[{"role": "user", "content": "hi"}], "max_tokens": 2}', headers=headers)
    assert r.status_code == 415 and "application/json" in r.json()["error"]["message"]
    r = post(server, "/v1/chat/completions", chat(max_tokens=2), headers={"Content-Type": "application/json; "
                                                                                           "charset=utf-8"})
    assert r.status_code == 200


def test_cors_answers_only_the_given_origins(server, lm):
    preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    r = httpx.options(server + "/v1/chat/completions", headers={"Origin": ORIGIN, **preflight})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    r = httpx.options(server + "/v1/chat/completions", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in r.headers
    r = post(server, "/v1/chat/completions", chat(max_tokens=2), headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    with live_server(lm, name=MODEL) as (url, _):  # the default: no CORS at all
        r = httpx.options(url + "/v1/chat/completions", headers={"Origin": ORIGIN, **preflight})
        assert "access-control-allow-origin" not in r.headers and r.status_code == 405


def test_allowed_host_names():
    assert allowed_host_names("0.0.0.0") is None and allowed_host_names("127.0.0.1", ["*"]) is None
    names = allowed_host_names("0.0.0.0", ["Box.LAN", " 10.0.0.5 "])
    assert names >= {"box.lan", "10.0.0.5", "127.0.0.1", "localhost", "::1"}
    assert "192.168.1.9" in allowed_host_names("192.168.1.9")


def test_serve_help_documents_the_guards():
    result = run_cli("serve", "--help")
    text = " ".join(result.stdout.split())
    assert result.returncode == 0
    for needle in ("--allowed-hosts", "--cors-origins", "DNS-rebinding", "/metrics", "application/json"):
        assert needle in text, needle
