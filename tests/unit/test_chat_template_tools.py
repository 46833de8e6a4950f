"""Tools reach the chat template as Hugging Face's `apply_chat_template(tools=...)` hands them (issue 25 item 2): a
tool-aware template (Qwen 2.5's shape) renders an OpenAI conversation with tools, tool calls and tool results to the
same prompt in lmforge's server as in transformers; a template that does not read `tools` gets the Hermes format."""

import pytest

from lmforge.server.protocol import ChatCompletionRequest
from lmforge.server.served import ServedModel
from lmforge.server.tools import plan_chat
from lmforge.tokenizer import Tokenizer
from lmforge.tokenizer.chat_template import CHATML_TEMPLATE, template_variables
from tests.tiny_lm import tiny_tokenizer

QWEN_LIKE = """{%- if tools %}<|im_start|>system
{{ messages[0]['content'] if messages[0]['role'] == 'system' else 'You are helpful.' }}

# Tools
<tools>
{%- for tool in tools %}
{{ tool | tojson }}
{%- endfor %}
</tools><|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'assistant' and message.tool_calls is defined %}<|im_start|>assistant
{%- for tool_call in message.tool_calls %}
<tool_call>
{"name": "{{ tool_call.function.name }}", "arguments": {{ tool_call.function.arguments | tojson }}}
</tool_call>
{%- endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% elif not (tools and message.role == 'system') %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}"""
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
                                           "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                          "required": ["city"]}}}]
MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": "", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"}]


def served_prompt(template: str, **fields) -> str:
    tokenizer = tiny_tokenizer()
    tokenizer = Tokenizer(tokenizer.backend, eos_token="<|endoftext|>", chat_template=template)
    served = ServedModel("tiny", tokenizer, [2], 4096)
    body = ChatCompletionRequest.model_validate({"model": "tiny", "messages": MESSAGES, **fields})
    plan = plan_chat(body, served)
    return tokenizer.apply_chat_template(plan.messages, add_generation_prompt=True, **plan.template_kwargs)


def test_a_tool_aware_template_renders_as_transformers_does():
    transformers = pytest.importorskip("transformers")
    hf = transformers.PreTrainedTokenizerFast(tokenizer_object=tiny_tokenizer().backend)
    hf_messages = [dict(m) for m in MESSAGES]  # transformers' convention: arguments as an object
    hf_messages[2] = {**MESSAGES[2], "tool_calls": [{**MESSAGES[2]["tool_calls"][0], "function": {
        "name": "get_weather", "arguments": {"city": "Paris"}}}]}
    expected = hf.apply_chat_template(hf_messages, tools=TOOLS, chat_template=QWEN_LIKE, tokenize=False,
                                      add_generation_prompt=True)
    assert served_prompt(QWEN_LIKE, tools=TOOLS) == expected
    assert '"name": "get_weather", "arguments": {"city": "Paris"}' in expected and "<tools>" in expected
    # tool_choice "none": the tools are not offered, the conversation is rendered all the same
    assert "<tools>" not in served_prompt(QWEN_LIKE, tools=TOOLS, tool_choice="none")


def test_a_template_without_tools_gets_the_hermes_format():
    assert "tools" in template_variables(QWEN_LIKE) and "tools" not in template_variables(CHATML_TEMPLATE)
    text = served_prompt(CHATML_TEMPLATE, tools=TOOLS)
    assert text.startswith("<|im_start|>system\nBe brief.\n\n# Tools\n") and '"name": "get_weather"' in text
    assert '<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n' \
           '</tool_call><|im_end|>' in text
    assert "<|im_start|>tool\n<tool_response>\nsunny\n</tool_response><|im_end|>\n<|im_start|>assistant\n" in text
