"""The sampling flags shared by `lmforge generate` and `lmforge chat`, declared once: `@with_sampling_flags` puts
them in a command's signature where its `sampling` parameter stands, and `sampling_params` maps them to
SamplingParams.
"""

import functools
import inspect

import typer

from lmforge.generation.sampling_params import SamplingParams

DEFAULT_TEMPERATURE = 0.2
TEMPERATURE = typer.Option(None, "--temperature", "-t", help=f"0 = greedy; higher = more random.  [default: "
                                                             f"{DEFAULT_TEMPERATURE}, SmolLM2's recommendation for "
                                                             f"small chat models]")
TOP_K = typer.Option(0, "--top-k", help="Sample among the K most likely tokens only (0 = off).")
TOP_P = typer.Option(1.0, "--top-p", help="Nucleus sampling: the smallest set of tokens reaching probability P "
                                          "(1 = off).")
MIN_P = typer.Option(0.0, "--min-p", help="Drop tokens less likely than MIN_P x the most likely one (0 = off).")
REPETITION = typer.Option(1.0, "--repetition-penalty", help="Divide the logits of tokens already seen in the prompt "
                                                            "or answer (>1 repeats less; 1 = off).")
PRESENCE = typer.Option(0.0, "--presence-penalty", help="OpenAI presence penalty in [-2, 2]: minus this for every "
                                                        "token already generated.")
FREQUENCY = typer.Option(0.0, "--frequency-penalty", help="OpenAI frequency penalty in [-2, 2]: minus this times "
                                                          "each token's count so far.")
SEED = typer.Option(None, "--seed", help="Seed for sampling (reproducible output).")
MAX_NEW = typer.Option(256, "--max-new-tokens", "-n", help="Most tokens to generate per answer.")
MODEL = typer.Option("smollm2-135m", "--model", "-m", help="Embedded model name, HF directory or .gguf.")
DTYPE = typer.Option("float32", help="Compute dtype: float32 or bfloat16.")
THREADS = typer.Option(None, "--threads", help="Pin this many CPU threads for torch and lmforge's kernels (default: "
                                               "one per physical core, fewer while other processes use the CPU; "
                                               "LMFORGE_THREADS=N pins too).")

# the flags @with_sampling_flags puts in place of a command's `sampling` parameter, in this --help order
SAMPLING_FLAGS = {"max_new_tokens": (int, MAX_NEW), "temperature": (float, TEMPERATURE), "top_k": (int, TOP_K),
                  "top_p": (float, TOP_P), "min_p": (float, MIN_P), "repetition_penalty": (float, REPETITION),
                  "presence_penalty": (float, PRESENCE), "frequency_penalty": (float, FREQUENCY)}
SAMPLING = None  # the default of a command's `sampling` parameter (a placeholder: with_sampling_flags replaces it)


def with_sampling_flags(command):
    """The typer command `command` with the sampling flags where its parameter `sampling` stands; `command` gets
    their values as one dict, `sampling` (SAMPLING_FLAGS' names), for sampling_params(**sampling, seed=...)."""
    signature = inspect.signature(command, eval_str=True)
    params = []
    for param in signature.parameters.values():
        if param.name == "sampling":
            params += [param.replace(name=name, annotation=hint, default=option)
                       for name, (hint, option) in SAMPLING_FLAGS.items()]
        else:
            params.append(param)
    if len(params) == len(signature.parameters):
        raise TypeError(f"{command.__name__} has no `sampling` parameter for the sampling flags")

    @functools.wraps(command)
    def with_flags(**values):
        return command(sampling={name: values.pop(name) for name in SAMPLING_FLAGS}, **values)

    with_flags.__signature__ = signature.replace(parameters=params)
    with_flags.__annotations__ = {p.name: p.annotation for p in params}
    return with_flags


def sampling_params(*, temperature: float | None, top_k: int, top_p: float, min_p: float, repetition_penalty: float,
                    presence_penalty: float, frequency_penalty: float, seed: int | None, max_new_tokens: int,
                    **more) -> SamplingParams:
    """SamplingParams from the flags (invalid values raise ConfigError naming the field)."""
    return SamplingParams(
        temperature=DEFAULT_TEMPERATURE if temperature is None else temperature, top_k=top_k, top_p=top_p,
        min_p=min_p, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty, seed=seed, max_new_tokens=max_new_tokens, **more)
