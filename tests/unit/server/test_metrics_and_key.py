"""Issue 20 item 2: /metrics is labelled by route template, so unique paths do not grow it and no path can write a
sample line; with an API key every route but /health needs it, /metrics included."""

import uuid
from urllib.parse import quote

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.server_util import live_server
from tests.unit.server.conftest import KEY, MODEL, chat, post

AUTH = {"Authorization": f"Bearer {KEY}"}
ROUTES = {"/health", "/metrics", "/v1/models", "/v1/chat/completions", "/v1/completions", "unmatched"}
FORGED = '/v1/x"} 999\nlmforge_forged_total{a="b"} 1\n# '


def test_unique_paths_do_not_grow_metrics_and_cannot_forge_samples(lm):
    with live_server(lm, name=MODEL, api_key=KEY) as (url, _), httpx.Client(timeout=30) as client:
        assert post(url, "/v1/chat/completions", chat(max_tokens=2), headers=AUTH).status_code == 200
        for headers in ({}, AUTH):  # 401 without the key, 404 with it: each series exists once
            client.get(url + "/warm-up", headers=headers)
            client.request("BREW", url + "/v1/models", headers=headers)
        client.get(url + "/metrics", headers=AUTH)  # the scrape's own series
        before = client.get(url + "/metrics", headers=AUTH).text
        for i in range(500):
            client.get(f"{url}/{uuid.uuid4().hex}/{i}", headers=AUTH if i % 2 else {})
        for path in (FORGED, FORGED.replace("\n", "\r\n")):
            assert client.get(url + quote(path), headers=AUTH).status_code == 404
        after = client.get(url + "/metrics", headers=AUTH).text
        assert len(after) - len(before) < 100  # only counter values changed (was +8 KiB per 1,000 paths)
        assert "forged" not in after and "warm-up" not in after
        families = {f.name: f for f in text_string_to_metric_families(after)}
        assert "lmforge_forged" not in families
        routes = {s.labels["route"] for s in families["lmforge_requests"].samples}
        assert routes <= ROUTES and "unmatched" in routes
        methods = {s.labels["method"] for s in families["lmforge_requests"].samples}
        assert methods <= {"GET", "POST", "HEAD", "OPTIONS", "other"} and "other" in methods


def test_the_key_guards_every_route_but_health(lm):
    with live_server(lm, name=MODEL, api_key=KEY) as (url, _):
        assert httpx.get(url + "/health").status_code == 200
        for path in ("/metrics", "/v1/models", "/anything"):
            r = httpx.get(url + path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
        assert httpx.get(url + "/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(url + "/metrics", headers=AUTH).status_code == 200
        assert post(url, "/v1/completions", {"model": MODEL, "prompt": "hi"}).status_code == 401
