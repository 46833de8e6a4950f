"""Issue 27 item 5 on the web page, in a real browser (headless Chromium via playwright, as
test_web_page_browser.py): against a tiny random LLaVA server, a user attaches an image, the request carries it as
an image_url data: URL before the text, the answer streams, the message shows the image, no Content-Security-Policy
violation happens; a reload keeps the conversation's text (images are not stored in localStorage)."""

import shutil

import pytest

from tests.server_util import live_server
from tests.tiny_llava import png

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH", allow_module_level=True)

NAME = "tiny-llava"
WATCH = """
window.__violations = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective));
"""


def test_page_attaches_an_image_to_a_message(llava_lm, tmp_path):
    picture = tmp_path / "red.png"
    picture.write_bytes(png())
    with live_server(llava_lm, name=NAME) as (url, _), sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page()
        bodies = []
        page.on("request", lambda r: r.url.endswith("/v1/chat/completions") and bodies.append(r.post_data_json))
        page.add_init_script(WATCH)
        page.goto(url + "/")
        page.wait_for_function(f"() => document.getElementById('model-name').textContent === {NAME!r}")
        page.set_input_files("#attach", str(picture))
        page.wait_for_function("() => !document.getElementById('attached').hidden")
        assert "red.png" in page.inner_text("#attached")
        page.fill("#prompt", "what is it?")
        page.click("#send")
        page.wait_for_function("() => document.body.dataset.state === 'idle' && "
                               "document.querySelectorAll('.msg.assistant').length === 1", timeout=30_000)
        content = bodies[-1]["messages"][-1]["content"]
        assert content[0]["type"] == "image_url" and content[0]["image_url"]["url"].startswith("data:image/png;base64,")
        assert content[1] == {"type": "text", "text": "what is it?"}
        assert page.locator(".msg.user .body img").count() == 1 and page.is_hidden("#attached")
        assert page.locator(".msg.assistant .body").inner_text().strip()
        assert page.evaluate("window.__violations") == []
        page.reload()
        page.wait_for_function("() => document.querySelectorAll('.msg.user').length === 1")
        assert page.locator(".msg.user .body").inner_text() == "what is it?"
        browser.close()
