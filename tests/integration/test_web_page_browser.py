"""Issue 25 item 1 in a real browser: headless Chromium (Debian's `chromium`, driven by playwright; no browser
download) against a live server on the embedded SmolLM2. The streamed answer names Paris; Stop aborts the request
and the KV blocks return; a system prompt changes the answer; conversations survive a reload; behind an API key
the page asks for it; HTML and script in a user message or a model answer are shown as text and never run.
Screenshots at desktop and phone widths go to $LMFORGE_SCREENSHOTS (or the test's tmp dir)."""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from lmforge.formats.loader import load
from tests.server_util import live_server

pytestmark = pytest.mark.slow
sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None:
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium; .ci/run installs it where apt-get works)",
                allow_module_level=True)

MODEL = "smollm2-135m"
KEY = "sk-page-test"
PARIS = "What is the capital of France?"
PIRATE = "You are a pirate. Start every answer with 'Ahoy matey!'"  # greedy SmolLM2: "Ahoy, matey! ..."
HOSTILE = '<img src=x onerror="window.__xss=1"><script>window.__xss=2</script> & "quotes"'
# Before any page script: record what would betray executed or blocked markup, and every text the streaming answer
# showed (so "streamed" means the page drew it piece by piece).
WATCH = """
window.__violations = [];
window.__streamed = [];
document.addEventListener("securitypolicyviolation", (e) => window.__violations.push(e.violatedDirective));
new MutationObserver(() => {
  const body = document.querySelector(".msg.streaming .body");
  const text = body ? body.textContent : "";
  if (text && window.__streamed.at(-1) !== text) window.__streamed.push(text);
}).observe(document, { subtree: true, childList: true, characterData: true });
"""


@pytest.fixture(scope="module")
def lm():
    return load(MODEL)


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])  # CI containers run as root
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = Path(os.environ.get("LMFORGE_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class Page:
    """One browser tab on the chat page, with the few gestures the tests use."""

    def __init__(self, browser, url, width=1280, height=800):
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.errors, self.dialogs, self.requests = [], [], []
        self.page.on("pageerror", lambda err: self.errors.append(str(err)))
        self.page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        self.page.on("request", lambda r: r.url.endswith("/v1/chat/completions") and
                     self.requests.append(json.loads(r.post_data)))
        self.page.add_init_script(WATCH)
        self.page.goto(url + "/")

    def until(self, condition: str, timeout_ms=30_000):
        """Wait until the JavaScript `condition` holds. Passed as a function: playwright would eval a bare expression
        inside the page, which the page's Content-Security-Policy (no 'unsafe-eval') refuses."""
        self.page.wait_for_function(f"() => {condition}", timeout=timeout_ms)

    def connected(self):
        self.until(f"document.getElementById('model-name').textContent === {MODEL!r}")

    def settings(self, **values):
        if self.page.is_hidden("#settings"):
            self.page.click("#toggle-settings")
        for field, value in values.items():
            self.page.fill(f"#{field.replace('_', '-')}", str(value))
        self.page.click("#toggle-settings")

    def ask(self, text, wait=True):
        self.page.fill("#prompt", text)
        self.page.click("#send")
        if wait:
            self.idle()

    def idle(self, timeout_ms=60_000):
        self.until("document.body.dataset.state === 'idle'", timeout_ms)

    def answers(self):
        return self.page.locator(".msg.assistant .body").all_inner_texts()

    def figures(self):
        return self.page.locator(".msg.assistant .figures").all_inner_texts()

    def shot(self, path, width, height):
        self.page.set_viewport_size({"width": width, "height": height})
        self.page.screenshot(path=str(path), animations="disabled")  # the drawer's slide ends at once


def wait_blocks_free(llm, timeout=10.0) -> bool:
    deadline = time.time() + timeout
    while llm.stats().kv_blocks_in_use and time.time() < deadline:
        time.sleep(0.05)
    return llm.stats().kv_blocks_in_use == 0


def test_chat_stream_stop_system_prompt_and_reload(lm, browser, shots):
    with live_server(lm, name=MODEL) as (url, llm):
        tab = Page(browser, url)
        tab.connected()
        tab.settings(temperature=0, max_tokens=16)
        tab.ask(PARIS)
        first = tab.answers()[-1]
        assert "Paris" in first
        streamed = tab.page.evaluate("window.__streamed")
        assert len(streamed) >= 3 and all(b.startswith(a) for a, b in zip(streamed, streamed[1:], strict=False))
        assert tab.figures()[-1].split(" tokens")[0].isdigit() and "tok/s" in tab.figures()[-1]
        assert tab.requests[-1]["temperature"] == 0 and tab.requests[-1]["stream"] is True

        # a system prompt changes the answer: Regenerate asks again with it
        tab.settings(system_prompt=PIRATE)
        tab.page.click(".msg.assistant .action:text('Regenerate')")
        tab.idle()
        pirate = tab.answers()
        assert len(pirate) == 1 and "Ahoy" in pirate[0] and "Ahoy" not in first, pirate  # regenerated in place
        system = tab.requests[-1]["messages"][0]
        assert system == {"role": "system", "content": PIRATE}
        tab.settings(system_prompt="")

        # Stop mid-answer: the request is aborted in the server and its KV blocks come back
        tab.page.click("#new-chat")
        tab.settings(max_tokens=400)
        tab.ask("Write a long story about a brave knight and a dragon.", wait=False)
        tab.until("document.querySelector('.msg.streaming .body')?.textContent.length > 20")
        assert llm.stats().kv_blocks_in_use > 0 and llm.stats().requests_running == 1
        tab.page.click("#stop")
        tab.idle(timeout_ms=5_000)
        assert wait_blocks_free(llm)
        stopped_at = llm.stats().generated_tokens_total
        partial = tab.answers()[-1]
        assert "stopped" in tab.figures()[-1] and len(partial) > 20
        assert int(tab.figures()[-1].split(" tokens")[0]) < 400
        tab.until("document.getElementById('engine-stats').dataset.kvInUse === '0'", 8_000)
        assert "KV blocks 0/512" in tab.page.inner_text("#engine-stats")
        time.sleep(0.3)
        assert llm.stats().generated_tokens_total == stopped_at and tab.answers()[-1] == partial  # nothing more

        tab.shot(shots / "chat-desktop.png", 1280, 800)
        tab.shot(shots / "chat-phone.png", 390, 844)
        tab.page.click("#open-sidebar")
        tab.shot(shots / "chat-phone-conversations.png", 390, 844)
        tab.page.click("#backdrop", position={"x": 370, "y": 400})  # beside the drawer
        tab.page.set_viewport_size({"width": 1280, "height": 800})

        # conversations survive a reload
        tab.page.reload()
        tab.connected()
        titles = tab.page.locator("#conversations .conv").all_inner_texts()
        assert titles == ["Write a long story about a brave knight and a dragon.", PARIS]
        assert tab.answers() == [partial]
        assert tab.page.locator(".msg.assistant .role").all_inner_texts() == [MODEL]
        tab.page.click(f"#conversations .conv:text({PARIS!r})")
        assert tab.answers() == pirate
        tab.page.click(".msg.user .action:text('Edit')")  # edit the last question: back in the box, answer gone
        assert tab.page.input_value("#prompt") == PARIS and tab.answers() == []
        assert tab.errors == [] and tab.dialogs == [] and tab.page.evaluate("window.__violations") == []


def test_the_page_asks_for_the_api_key(lm, browser, shots):
    with live_server(lm, name=MODEL, api_key=KEY) as (url, llm):
        tab = Page(browser, url)
        tab.page.wait_for_selector("#key-panel", state="visible")
        assert "needs an API key" in tab.page.inner_text("#key-error")
        assert tab.page.inner_text("#model-name") == "API key needed"
        tab.page.fill("#key-input", "sk-wrong")
        tab.page.click("#key-submit")
        tab.until("document.getElementById('key-error').textContent.includes('refused this API key')")
        assert tab.page.is_visible("#key-panel")
        tab.shot(shots / "key-desktop.png", 1280, 800)
        tab.page.fill("#key-input", KEY)
        tab.page.click("#key-submit")
        tab.connected()
        assert tab.page.is_hidden("#key-panel")
        tab.page.click("#toggle-settings")
        tab.shot(shots / "settings-phone.png", 390, 844)
        tab.page.set_viewport_size({"width": 1280, "height": 800})
        tab.settings(temperature=0, max_tokens=24)
        tab.ask(PARIS)
        assert "Paris" in tab.answers()[-1]
        tab.until("document.getElementById('engine-stats').dataset.kvTotal === '512'")
        tab.page.reload()  # the key is kept for this tab (sessionStorage)
        tab.connected()
        assert tab.page.is_hidden("#key-panel") and "Paris" in tab.answers()[-1]
        assert tab.page.evaluate("localStorage.getItem('lmforge.apiKey')") is None  # not remembered unless asked
        assert tab.errors == []


def test_markup_from_the_user_or_the_model_is_shown_as_text_and_never_runs(lm, browser, shots):
    answer = ["Here: " + HOSTILE, "\n\n```html\n<script>window.__xss=3</script>\n```\n", "**<b>bold</b>** `<i>`"]
    chunks = [{"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]} for text in answer]
    chunks.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    sse = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    with live_server(lm, name=MODEL) as (url, _):
        tab = Page(browser, url)
        tab.connected()
        tab.page.route("**/v1/chat/completions", lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=sse))  # the model "answers" markup
        for _ in range(2):  # as first drawn, then as re-read from storage after a reload
            if not tab.answers():
                tab.ask(HOSTILE)
            else:
                tab.page.reload()
                tab.connected()
            assert tab.page.inner_text(".msg.user .body") == HOSTILE
            shown = tab.answers()[-1]
            assert HOSTILE in shown and "<script>window.__xss=3</script>" in shown and "<b>bold</b>" in shown
            assert tab.page.locator("#conversations .conv").first.inner_text() == HOSTILE[:60].strip()
            assert tab.page.locator("#messages img, #messages script, #messages b, #messages i").count() == 0
            assert tab.page.locator("#messages strong").inner_text() == "<b>bold</b>"  # markdown, of text
            assert tab.page.evaluate("window.__xss") is None
            assert tab.page.evaluate("window.__violations") == []  # nothing was even parsed as markup for CSP to stop
        tab.shot(shots / "markup-as-text-desktop.png", 1280, 800)
        assert tab.errors == [] and tab.dialogs == []
