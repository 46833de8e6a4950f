"""Chat templates: the real SmolLM2 template against transformers, the built-ins, validation and the sandbox."""

import datetime

import gguf
import pytest
import transformers
from transformers.utils.chat_template_utils import render_jinja_template  # the chat-template reference

from lmforge.common.errors import LmforgeError
from lmforge.tokenizer import ALPACA_TEMPLATE, BUILTIN_TEMPLATES, CHATML_TEMPLATE, Tokenizer, render_chat_template
from tests.embedded import embedded_gguf, transformers_reference_dir

CONVERSATIONS = {
    "single": [{"role": "user", "content": "Hi there"}],
    "multi_no_system": [
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3? Answer in French, s'il te plaît."},
    ],
    "multi_with_system": [
        {"role": "system", "content": 'You are terse. Use <b>bold</b> & "quotes".'},
        {"role": "user", "content": "List three colours."},
        {"role": "assistant", "content": "Red, green, blue."},
        {"role": "user", "content": "Now in Chinese: 颜色 🎨\n\nThanks!"},
        {"role": "assistant", "content": "红、绿、蓝。"},
    ],
}


def reference_render(template, messages, **kwargs):
    """transformers' own sandboxed renderer: an independent implementation of the same contract."""
    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template, **kwargs)
    return rendered[0]


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    path = embedded_gguf()
    template = gguf.GGUFReader(path).fields["tokenizer.chat_template"].contents()
    saved = transformers_reference_dir()  # the GGUF's tokenizer as transformers reads it, saved
    return template, transformers.AutoTokenizer.from_pretrained(saved), Tokenizer.from_dir(saved)


@pytest.mark.parametrize("name", CONVERSATIONS)
@pytest.mark.parametrize("prompt", [False, True])
def test_smollm2_template_matches_transformers(smollm2, name, prompt):
    template, reference, ours = smollm2
    messages = CONVERSATIONS[name]
    expected = reference.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=False)
    rendered = render_chat_template(
        template, messages, add_generation_prompt=prompt, bos_token=ours.bos_token, eos_token=ours.eos_token
    )
    assert rendered == expected
    assert ours.chat_template == template
    assert ours.apply_chat_template(messages, add_generation_prompt=prompt) == expected
    expected_ids = reference.apply_chat_template(
        messages, add_generation_prompt=prompt, tokenize=True, return_dict=False
    )
    assert ours.apply_chat_template(messages, add_generation_prompt=prompt, tokenize=True) == expected_ids
    if name != "multi_with_system":  # SmolLM2 inserts its default system prompt
        assert "You are a helpful AI assistant named SmolLM" in rendered


CHAT = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is 6*7?"},
    {"role": "assistant", "content": "Let me compute."},
    {"role": "tool", "content": "42"},
    {"role": "assistant", "content": "42."},
]


def test_chatml_renders_the_documented_string():
    expected = (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is 6*7?<|im_end|>\n"
        "<|im_start|>assistant\nLet me compute.<|im_end|>\n"
        "<|im_start|>tool\n42<|im_end|>\n"
        "<|im_start|>assistant\n42.<|im_end|>\n"
    )
    assert render_chat_template(CHATML_TEMPLATE, CHAT) == expected
    prompt = render_chat_template(CHATML_TEMPLATE, CHAT[:2], add_generation_prompt=True)
    assert prompt == expected[: expected.index("Let me")]
    assert reference_render(CHATML_TEMPLATE, CHAT) == expected
    with pytest.raises(LmforgeError, match="ChatML has no role narrator; allowed: system, user, assistant, tool"):
        render_chat_template(CHATML_TEMPLATE, [{"role": "narrator", "content": "Once"}])


def test_alpaca_renders_the_stanford_format():
    preamble = (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
    )
    single = [{"role": "user", "content": "Give three tips."}, {"role": "assistant", "content": "Eat, sleep, move."}]
    text = render_chat_template(ALPACA_TEMPLATE, single, eos_token="</s>")
    assert text == f"{preamble}\n\n### Instruction:\nGive three tips.\n\n### Response:\nEat, sleep, move.</s>"
    prompt = render_chat_template(ALPACA_TEMPLATE, single[:1], add_generation_prompt=True, eos_token="</s>")
    assert text.startswith(prompt) and prompt.endswith("### Response:\n")

    with_input = [
        {"role": "user", "content": "Translate.", "input": "Bonjour"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "And again?"},
    ]
    text = render_chat_template(ALPACA_TEMPLATE, with_input, add_generation_prompt=True, eos_token="</s>")
    assert text == (
        "Below is an instruction that describes a task, paired with an input that provides further context. "
        "Write a response that appropriately completes the request.\n\n"
        "### Instruction:\nTranslate.\n\n### Input:\nBonjour\n\n### Response:\nHello</s>\n\n"
        "### Instruction:\nAnd again?\n\n### Response:\n"
    )
    system = [{"role": "system", "content": "You are a poet."}, *single]
    assert render_chat_template(ALPACA_TEMPLATE, system, eos_token="</s>").startswith("You are a poet.\n\n### Instr")
    for messages in (single, with_input, system):
        for prompt in (False, True):
            ours = render_chat_template(ALPACA_TEMPLATE, messages, add_generation_prompt=prompt, eos_token="</s>")
            assert ours == reference_render(ALPACA_TEMPLATE, messages, add_generation_prompt=prompt, eos_token="</s>")
    assert set(BUILTIN_TEMPLATES) == {"chatml", "alpaca"}


def test_template_helpers_match_transformers():
    tools = [{"name": "weather", "description": 'Météo <now> & "later"', "parameters": {"city": "str"}}]
    template = (
        "{{ bos_token }}{{ tools | tojson }}|{{ tools | tojson(indent=2) }}|{{ messages[0] | tojson }}\n"
        "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 2 %}{% break %}{% endif %}"
        "{% set ns.n = ns.n + 1 %}{% generation %}[{{ m.content }}]{% endgeneration %}{% endfor %}{{ ns.n }}\n"
        "{{ dict(a=1) | tojson }}{% if documents is none %} no-docs{% endif %}{{ custom_flag }}"
    )
    kwargs = dict(tools=tools, bos_token="<s>", custom_flag="!")
    assert render_chat_template(template, CHAT, **kwargs) == reference_render(template, CHAT, **kwargs)
    indented = (
        "{% for m in messages %}\n"
        "    {% if m.role == 'user' %}\n"
        "U: {{ m.content }}\n"
        "    {% elif m.role == 'assistant' %}\n"
        "A: {{ m.content }}\n"
        "    {% endif %}\n"
        "{% endfor %}\n"
        "{% if add_generation_prompt %}A:{% endif %}"
    )
    for prompt in (False, True):
        ours = render_chat_template(indented, CHAT, add_generation_prompt=prompt)
        assert ours == reference_render(indented, CHAT, add_generation_prompt=prompt)
    assert render_chat_template(indented, CHAT[1:3]) == "U: What is 6*7?\nA: Let me compute.\n"
    year = render_chat_template("{{ strftime_now('%Y') }}", CHAT[:1])
    assert int(year) in {datetime.datetime.now().year, datetime.datetime.now().year - 1}


def test_messages_are_validated():
    cases = [
        ("not a list", "non-empty list of dicts"),
        ([], "non-empty list of dicts"),
        (["hello"], "message 0 must be a dict"),
        ([{"content": "no role"}], "message 0 needs a non-empty string 'role'"),
        ([{"role": "user", "content": "ok"}, {"role": 3, "content": "x"}], "message 1 needs a non-empty string"),
        ([{"role": "user"}], r"message 0 \(role 'user'\) has no 'content'"),
        ([{"role": "user", "content": 42}], "content of type int; allowed: a string or a list"),
        ([{"role": "user", "content": object()}], "content of type object"),
        ([{"role": "user", "content": "x", "meta": object()}], "message 0 contains a object"),
    ]
    for messages, message in cases:
        with pytest.raises(LmforgeError, match=message):
            render_chat_template(CHATML_TEMPLATE, messages)
    # OpenAI-style tool call: content None is dropped, the template sees no content key.
    calls = [{"role": "assistant", "content": None, "tool_calls": [{"name": "f"}]}]
    assert render_chat_template("{{ messages[0].content is defined }}", calls) == "False"


SANDBOX_ESCAPES = [
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ ''.__class__ }}",
    "{{ messages.__class__.__base__ }}",
    "{{ cycler.__init__.__globals__.os.popen('touch {marker}').read() }}",
    "{{ lipsum.__globals__['os'].system('touch {marker}') }}",
    "{{ raise_exception.__globals__ }}",
    "{{ messages[0]['__class__'] }}",
    "{% set x = messages.append({'role': 'x'}) %}",
    "{% set ns = namespace(__init__=1) %}",
]


@pytest.mark.parametrize("payload", SANDBOX_ESCAPES)
def test_sandbox_escape_is_refused(tmp_path, payload):
    marker = tmp_path / "pwned"
    with pytest.raises(LmforgeError, match="unsafe|not allowed|underscore"):
        render_chat_template(payload.replace("{marker}", str(marker)), CHAT)
    assert not marker.exists()


def test_template_errors_become_lmforge_errors():
    with pytest.raises(LmforgeError, match="chat template refused the conversation: only users"):
        render_chat_template("{{ raise_exception('only users') }}", CHAT)
    with pytest.raises(LmforgeError, match="syntax error on line 2"):
        render_chat_template("ok\n{% for m in messages %}", CHAT)
    with pytest.raises(LmforgeError, match="failed to render"):
        render_chat_template("{{ messages[0]['content'] + 1 }}", CHAT)
    with pytest.raises(LmforgeError, match="non-empty string"):
        render_chat_template("", CHAT)


def test_tokenizer_needs_a_template(tmp_path):
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    backend = Backend(models.WordLevel({"<|im_start|>": 0, "<|im_end|>": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = Tokenizer(backend, unk_token="[UNK]")
    with pytest.raises(LmforgeError, match="no chat template"):
        tok.apply_chat_template(CHAT)
    text = tok.apply_chat_template(CHAT[:1], chat_template=BUILTIN_TEMPLATES["chatml"])
    assert text == "<|im_start|>system\nBe brief.<|im_end|>\n"
