"""Issue 25 items 1 and 4 over HTTP (the browser test is tests/integration/test_web_page_browser.py): the page and
its two files are public and served with a CSP that forbids inline script, their HTML holds no inline script or
event-handler attribute, nothing else is reachable under /static, every API route still needs the key, and
/stats and /metrics report the engine's own `stats()` snapshot."""

import re
from html.parser import HTMLParser

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.server_util import live_server
from tests.unit.server.conftest import KEY, MODEL, chat, post

AUTH = {"Authorization": f"Bearer {KEY}"}
SCRIPTS = ["/static/api.js", "/static/markdown.js", "/static/settings.js", "/static/app.js"]
FILES = {"/": "text/html", "/static/style.css": "text/css", **{path: "text/javascript" for path in SCRIPTS}}


class InlineCode(HTMLParser):
    """Collects what a CSP without 'unsafe-inline' would block: inline scripts, on* attributes, style attributes."""

    def __init__(self):
        super().__init__()
        self.found, self.scripts, self.in_script = [], [], False

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name.startswith("on") or name == "style" or (value or "").strip().lower().startswith("javascript:"):
                self.found.append(f"<{tag} {name}=...>")
        if tag == "script":
            self.scripts.append(dict(attrs).get("src"))
            self.in_script = True

    def handle_endtag(self, tag):
        self.in_script = self.in_script and tag != "script"

    def handle_data(self, data):
        if self.in_script and data.strip():
            self.found.append("inline <script> body")


def test_page_is_public_with_a_csp_and_the_api_still_needs_the_key(lm):
    with live_server(lm, name=MODEL, api_key=KEY) as (url, _), httpx.Client(base_url=url, timeout=30) as client:
        for path, media in FILES.items():
            r = client.get(path)  # no key: a browser cannot send one when it navigates
            assert r.status_code == 200 and r.headers["content-type"].startswith(media), path
            csp = r.headers["content-security-policy"]
            assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
            assert "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
            assert r.headers["x-content-type-options"] == "nosniff" and r.headers["x-frame-options"] == "DENY"
        html = client.get("/").text
        parser = InlineCode()
        parser.feed(html)
        assert parser.found == [] and parser.scripts == SCRIPTS
        stylesheets = re.findall(r'<link rel="stylesheet" href="([^"]+)"', html)
        assert stylesheets == ["/static/style.css"] and "http" not in html.replace("http-equiv", "")  # no CDN
        for path in SCRIPTS:  # the page inserts text, never HTML
            script = client.get(path).text
            assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function",
                                 script), path
        for path in ("/static/page.py", "/static/../page.py", "/static/%2e%2e/page.py", "/static/", "/index.html",
                     "/STATIC/app.js"):
            assert client.get(path).status_code == 401, path  # not a page file: the key is needed
            assert client.get(path, headers=AUTH).status_code == 404, path  # and with it, nothing is there
        assert client.get("/?file=../page.py").text == html  # no parameter picks the file
        for path in ("/v1/models", "/stats", "/metrics"):
            r = client.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key", path
            assert client.get(path, headers=AUTH).status_code == 200, path
        assert post(url, "/v1/chat/completions", chat(max_tokens=2)).status_code == 401
        assert client.get("/", headers={"Host": "evil.example"}).status_code == 400  # DNS rebinding guard holds


def test_stats_and_metrics_report_the_engine_snapshot(lm):
    with live_server(lm, name=MODEL) as (url, llm), httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/stats").json() == llm.stats().as_dict()
        r = post(url, "/v1/chat/completions", chat(max_tokens=7, temperature=0))
        completion = r.json()["usage"]["completion_tokens"]
        stats = client.get("/stats").json()
        assert stats == llm.stats().as_dict()
        assert stats["generated_tokens_total"] == completion and stats["kv_blocks_in_use"] == 0
        assert stats["kv_blocks_total"] == llm.block_manager.num_blocks == 512
        assert stats["steps_total"] == completion  # one prefill step that samples, then one step per token
        assert stats["computed_tokens_total"] == r.json()["usage"]["prompt_tokens"] + completion - 1
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
        value = {name: families[name].samples[0].value for name in families if families[name].samples}
        assert value["lmforge_kv_blocks_total"] == 512 and value["lmforge_kv_blocks_in_use"] == 0
        assert value["lmforge_engine_generated_tokens"] == completion  # counter family names drop _total
        assert value["lmforge_queue_length"] == 0 and value["lmforge_running_requests"] == 0
        assert families["lmforge_preemptions"].type == "counter"
