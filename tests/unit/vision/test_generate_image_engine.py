"""Images through the one decode loop and the serving engine agree: a left-padded batch mixing an image prompt and
a text prompt in `generate_stream`, and the engine with chunked prefill cutting the image's visual tokens across
steps (block size 4, 8 tokens a step), give the same tokens and log-probabilities as each prompt alone."""

import io

import torch
from PIL import Image

from lmforge.engine.llm import LLM, EngineConfig
from lmforge.generation.generate import generate_stream
from lmforge.generation.images import ImageEncoder
from lmforge.generation.sampling_params import SamplingParams
from tests.tiny_llava import TOKENS_PER_IMAGE, png


def run_loop(lm, prompts, images):
    params = SamplingParams(max_new_tokens=4, temperature=0, logprobs=3)
    rows = [[] for _ in prompts]
    for step in generate_stream(lm.model, prompts, params, images=images):
        for row, event in enumerate(step):
            if event is not None:
                rows[row].append((event.token, event.logprob))
    return rows


def test_image_prompts_batch_and_chunk_like_alone(llava_lm):
    vision = ImageEncoder.from_lm(llava_lm)
    pixels = vision.pixels([Image.open(io.BytesIO(png((30, 160, 60), "circle")))])
    tokenizer = llava_lm.tokenizer
    pictured = vision.expand(tokenizer.encode("look:") + [vision.image_token_id] + tokenizer.encode(" what?"))
    text = tokenizer.encode("the cat sat on the mat. the dog sat on the log. hello world, hello there!")
    assert len(text) > len(pictured) > TOKENS_PER_IMAGE  # the image row is left-padded in the batch
    encoded = vision.encode(pictured, pixels)

    alone = run_loop(llava_lm, [pictured], [encoded])[0]
    batched = run_loop(llava_lm, [pictured, text], [encoded, None])
    for row, want in ((0, alone), (1, run_loop(llava_lm, [text], None)[0])):  # the text row: as with no image around
        assert [t for t, _ in batched[row]] == [t for t, _ in want]
        torch.testing.assert_close([lp for _, lp in batched[row]], [lp for _, lp in want], atol=1e-4, rtol=0)
    assert [t for t, _ in alone] != [t for t, _ in run_loop(llava_lm, [pictured], None)[0]]  # the image counts

    config = EngineConfig(num_blocks=64, block_size=4, chunked_prefill=True, max_num_batched_tokens=8)
    llm = LLM(llava_lm.model, tokenizer, config, vision=vision)
    params = SamplingParams(max_new_tokens=4, temperature=0, logprobs=3)
    outs = llm.generate([pictured, text], params, images=[pixels, None])
    assert outs[0].output_ids == [t for t, _ in alone] and outs[1].output_ids == [t for t, _ in batched[1]]
    # the same prompt again: its image blocks come from the prefix cache, the answer is the same
    again = llm.generate([pictured], params, images=[pixels])[0]
    assert again.output_ids == outs[0].output_ids
