"""Issue 27 item 5, the CLI: `lmforge generate --image` and `lmforge chat --image` / `/image` on a LLaVA directory.
The first generated token's log-probabilities equal transformers' LlavaForConditionalGeneration on the same
directory and image (its own CLIPImageProcessor) within 1e-4; the prompt counts the image's visual tokens; a
text-only prompt gives what the language model alone gives; a text model or a missing file is a one-line error."""

import json

import pytest
import torch
from typer.testing import CliRunner

from lmforge.cli.main import app
from lmforge.common.errors import LmforgeError
from lmforge.generation.generate import generate
from lmforge.generation.sampling_params import SamplingParams
from tests.tiny_llava import TOKENS_PER_IMAGE, png


def run(*args, input=None):
    result = CliRunner().invoke(app, list(args), input=input)
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("img") / "red.png"
    path.write_bytes(png((220, 30, 30), "square"))
    return path


def reference_logprobs(directory, ids: list[int], image_path) -> torch.Tensor:
    import transformers as tf
    from PIL import Image

    model = tf.LlavaForConditionalGeneration.from_pretrained(directory).eval()
    pixels = tf.CLIPImageProcessor.from_pretrained(directory)(Image.open(image_path), return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), pixel_values=pixels["pixel_values"]).logits[0, -1]
    return torch.log_softmax(logits.double(), -1)


def test_generate_image_first_token_matches_transformers(llava_dir, llava_lm, picture):
    out = json.loads(run("generate", "hello there", "-m", str(llava_dir), "--image", str(picture), "--json",
                         "--logprobs", "20", "-n", "3", "-t", "0"))
    text_ids = llava_lm.tokenizer.encode("hello there")
    ids = [llava_lm.vision.config.image_token_id] * TOKENS_PER_IMAGE + text_ids  # the image first
    assert out["prompt_tokens"] == len(ids) == len(text_ids) + 16
    want = reference_logprobs(llava_dir, ids, picture)
    first = out["logprobs"][0]
    got = {t["id"]: t["logprob"] for t in first["top_logprobs"]}
    assert len(got) == 20 and first["id"] == int(want.argmax())
    assert max(abs(lp - float(want[i])) for i, lp in got.items()) < 1e-4
    # the same prompt without the image answers otherwise, and exactly as the language model alone
    text = json.loads(run("generate", "hello there", "-m", str(llava_dir), "--json", "-n", "3", "-t", "0"))
    alone = generate(llava_lm.model, [text_ids], SamplingParams(max_new_tokens=3, temperature=0,
                                                                stop_token_ids=llava_lm.stop_token_ids()))[0]
    assert text["prompt_tokens"] == len(text_ids) and text["completion_tokens"] == len(alone)
    assert text["text"] == llava_lm.tokenizer.decode([t for t in alone if t not in llava_lm.stop_token_ids()])


def test_chat_image_command_sends_the_image_with_the_next_message(llava_dir, picture, tmp_path):
    saved = tmp_path / "conv.json"
    script = f"/image {tmp_path / 'nope.png'}\n/image {picture}\nwhat is it?\n/save {saved}\n"
    output = run("chat", "-m", str(llava_dir), "-n", "4", "-t", "0", input=script)
    assert "cannot read image" in output  # the missing file: an error line, the chat goes on
    messages = json.loads(saved.read_text())
    assert messages[0] == {"role": "user", "content": [{"type": "image", "image": str(picture)},
                                                       {"type": "text", "text": "what is it?"}]}
    once = json.loads(run("generate", "--chat", "what is it?", "-m", str(llava_dir), "--image", str(picture),
                          "--json", "-n", "4", "-t", "0"))
    assert messages[1]["content"] == once["text"]
    plain = json.loads(run("generate", "--chat", "what is it?", "-m", str(llava_dir), "--json", "-n", "4", "-t", "0"))
    assert plain["prompt_tokens"] == once["prompt_tokens"] - TOKENS_PER_IMAGE - 1  # the image and its newline


@pytest.mark.parametrize("args,needle", [
    (["--image", "missing.png"], "--image missing.png: no such file"),
    (["--image", "PICTURE", "--num-beams", "2"], "cannot be combined with --draft or --num-beams"),
])
def test_image_mistakes_are_one_line_errors(llava_dir, picture, args, needle):
    args = [str(picture) if a == "PICTURE" else a for a in args]
    result = CliRunner().invoke(app, ["generate", "hi", "-m", str(llava_dir), *args])
    assert isinstance(result.exception, LmforgeError) and needle in str(result.exception), result.output


def test_image_to_a_text_model_is_a_one_line_error(tmp_path, picture):
    from tests.tiny_lm import tiny_lm

    tiny_lm().save(tmp_path)
    result = CliRunner().invoke(app, ["generate", "hi", "-m", str(tmp_path), "--image", str(picture)])
    assert isinstance(result.exception, LmforgeError), result.output
    assert "--image needs a LLaVA model directory" in str(result.exception)
