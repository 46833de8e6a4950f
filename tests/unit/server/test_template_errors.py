"""Issue 20 item 6: a chat template that raises (1/0, endless recursion) or runs away (nested ranges, huge
repetitions) is a 400 in the server and a one-line error in the CLI, and rendering stops at its time or size cap."""

import copy
import time
import tracemalloc

import httpx
import pytest

from lmforge.common.errors import LmforgeError
from lmforge.formats.loader import LM
from lmforge.tokenizer import template_limits
from lmforge.tokenizer.chat_template import render_chat_template
from tests.cli_util import assert_user_error, run_cli
from tests.server_util import live_server
from tests.tiny_lm import tiny_lm
from tests.unit.server.conftest import MODEL, chat, post

TEMPLATES = {
    "division": "{{ 1 / 0 }}",
    "recursion": "{% macro f(x) %}{{ f(x) }}{% endmacro %}{{ f(1) }}",
    "nested ranges": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "output size": "{% for i in range(100000) %}{% for j in range(100000) %}xxxxxxxx{% endfor %}{% endfor %}",
    "huge repeat": "{{ 'x' * 10 ** 10 }}",
    "huge power": "{% set n = 10 %}{{ n ** 100000 }}",
    "missing key": "{{ messages[0]['nope'].x.y }}",
    "doubling concat": "{% macro d(s, n) %}{% if n %}{{ d(s ~ s, n - 1) }}{% else %}{{ s|length }}{% endif %}"
                       "{% endmacro %}{{ d('xy', 40) }}",
    "doubling namespace": "{% set ns = namespace(s='xy') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}"
                          "{% endfor %}{{ ns.s|length }}",
    "doubling plus": "{% macro d(s, n) %}{% if n %}{{ d(s + s, n - 1) }}{% else %}{{ s|length }}{% endif %}"
                     "{% endmacro %}{{ d(['x'], 40) }}",
}


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_a_failing_or_runaway_template_is_a_400(lm, monkeypatch, name):
    monkeypatch.setattr(template_limits, "RENDER_SECONDS", 0.5)
    monkeypatch.setattr(template_limits, "RENDER_MAX_CHARS", 2**20)
    tokenizer = copy.copy(lm.tokenizer)
    tokenizer.chat_template = TEMPLATES[name]
    hostile = LM(model=lm.model, tokenizer=tokenizer, source="tiny", generation_config=lm.generation_config)
    with live_server(hostile, name=MODEL) as (url, _):
        start = time.perf_counter()
        r = post(url, "/v1/chat/completions", chat(max_tokens=2))
        took = time.perf_counter() - start
        assert r.status_code == 400 and r.json()["error"]["param"] == "messages", r.text[:300]
        assert "chat template" in r.json()["error"]["message"]
        assert took < 5, took  # capped (the nested loops alone would run for hours)
        assert httpx.get(url + "/health").status_code == 200
        r = post(url, "/v1/completions", {"model": MODEL, "prompt": "the cat", "max_tokens": 2})
        assert r.status_code == 200  # the server goes on


def test_a_failing_template_is_a_one_line_error_in_the_cli(tmp_path):
    tiny_lm().save(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(TEMPLATES["division"])
    assert_user_error(run_cli("generate", "-m", str(tmp_path), "--chat", "hi", "-n", "2"),
                      "chat template", "ZeroDivisionError")


@pytest.mark.parametrize("name", ["doubling concat", "doubling namespace", "doubling plus"])
def test_a_doubling_template_is_stopped_by_size_before_memory_grows(name):
    """A value that doubles per step reaches GiBs well inside any time limit (8.2 GiB peak RSS in 2 s before the
    size check): it is stopped once a variable passes the cap, with the memory traced staying near it."""
    tracemalloc.start()
    try:
        with pytest.raises(LmforgeError, match="passed 1048576 characters|would build"):
            render_chat_template(TEMPLATES[name], [{"role": "user", "content": "hi"}], time_limit=0.5,
                                 max_chars=2**20)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2**20, peak  # the capped value (1-8 MiB for ~1M chars or list items) and its copies
