"""`lmforge serve`: an OpenAI-compatible HTTP server (chat and text completions, streaming) on 127.0.0.1."""

import sys
from pathlib import Path

import typer

from lmforge.cli import sampling_options as opt
from lmforge.cli.device_option import DEVICE, pick_device, place
from lmforge.cli.safety_cmd import SAFETY, load_rails
from lmforge.common.errors import LmforgeError
from lmforge.common.threads import set_threads

EPILOG = ("Attention, RMSNorm, RoPE, the SwiGLU activation, the sampler's argmax and the linears (float32 on AVX-512 "
          "CPUs, bfloat16 on CPUs with AVX512-BF16) run in small C++ kernels compiled on first use (20-40 s once per "
          "machine; it needs g++ or clang). "
          "LMFORGE_CPU_KERNELS=0 keeps the slower PyTorch / oneDNN path.")


def serve(
    model: str = typer.Argument("smollm2-135m", help="Embedded model name, HF directory or .gguf file."),
    host: str = typer.Option("127.0.0.1", help="Interface to bind; 0.0.0.0 exposes the server to your network."),
    port: int = typer.Option(8000, min=1, max=65535, help="TCP port."),
    api_key: str = typer.Option(None, "--api-key", envvar="LMFORGE_API_KEY",
                                help="Require 'Authorization: Bearer KEY' on every route but /health, /metrics "
                                     "included (it shows the traffic; env LMFORGE_API_KEY)."),
    allowed_hosts: str = typer.Option("", "--allowed-hosts", help="Comma-separated extra names the Host header may "
                                      "carry (DNS-rebinding guard; 127.0.0.1, localhost, [::1] and --host always "
                                      "pass; '*' = any, the default with --host 0.0.0.0)."),
    cors_origins: str = typer.Option("", "--cors-origins", help="Comma-separated web origins allowed to call the "
                                     "API from a browser (CORS); none by default."),
    served_name: str = typer.Option(None, "--served-model-name", help="Model id clients send (default: MODEL)."),
    dtype: str = typer.Option("float32", help="Compute dtype: float32 or bfloat16."),
    device: str = DEVICE,
    kv_cache_gb: float = typer.Option(1.0, "--kv-cache-gb", min=0.01, help="Memory for the paged KV cache."),
    block_size: int = typer.Option(16, min=1, help="Tokens per KV cache block."),
    max_num_seqs: int = typer.Option(32, min=1, help="Most sequences decoded together."),
    max_batched_tokens: int = typer.Option(2048, min=1, help="Token budget of one engine step."),
    max_pending: int = typer.Option(256, min=1, help="Requests queued or running before answering 429."),
    no_prefix_cache: bool = typer.Option(False, "--no-prefix-cache", help="Disable prefix caching."),
    chunked_prefill: bool = typer.Option(False, help="Split long prompts across steps to keep decoding smooth."),
    log_level: str = typer.Option("warning", help="uvicorn log level."),
    safety: str = SAFETY,
    embedding_model: str = typer.Option(None, "--embedding-model", help="Also serve /v1/embeddings with this model "
                                        "(all-minilm-l6-v2, a sentence-transformers or HF directory); its id is this "
                                        "value."),
    rag: Path = typer.Option(None, "--rag", help="Ground chat answers in this index (lmforge rag index): the last "
                                                 "user message is the question; responses add a 'sources' field."),
    rag_top_k: int = typer.Option(3, "--rag-top-k", min=1, max=20, help="Chunks retrieved per question with --rag."),
    threads: int = opt.THREADS,
) -> None:
    """Serve MODEL over the OpenAI HTTP API: /v1/chat/completions, /v1/completions, /v1/moderations, /v1/models,
    /health, /metrics (and /v1/embeddings with --embedding-model); a web chat page at / (it asks for --api-key in
    the browser) and the engine's figures at /stats. A LLaVA directory also takes images in chat messages
    (image_url parts holding data: URLs; remote URLs are refused).

    POST bodies must be 'Content-Type: application/json'; the Host header must name this server (--allowed-hosts).
    """
    rails = load_rails(safety)
    set_threads(threads)
    where = pick_device(device, dtype)  # a missing GPU answers before the server's imports
    import uvicorn

    from lmforge.engine.llm import LLM, EngineConfig
    from lmforge.formats.loader import load
    from lmforge.generation.images import ImageEncoder
    from lmforge.model.inference import prepare_for_inference
    from lmforge.server.app import create_app
    from lmforge.server.async_engine import AsyncEngine
    from lmforge.server.guard import allowed_host_names
    from lmforge.server.served import ServedModel

    embedder, retriever = _rag_parts(embedding_model, rag, where)
    lm = place(load(model, dtype=dtype), where)
    prepare_for_inference(lm.model)  # fused projections, packed linears, CPU kernels (inference only)
    if lm.tokenizer is None:
        raise LmforgeError(f"{model} has no tokenizer (tokenizer.json); the server needs one")
    config = EngineConfig(block_size=block_size, kv_cache_gb=kv_cache_gb, max_num_seqs=max_num_seqs,
                          max_num_batched_tokens=max_batched_tokens, enable_prefix_caching=not no_prefix_cache,
                          chunked_prefill=chunked_prefill)
    vision = ImageEncoder.from_lm(lm)  # a LLaVA directory: chat messages may hold images (data: URLs)
    llm = LLM(lm.model, lm.tokenizer, config, vision=vision)
    served_args = (served_name or model, lm.tokenizer, lm.stop_token_ids(), lm.config.max_seq_len)
    if retriever is not None:
        from lmforge.server.rag_served import RagServedModel

        served = RagServedModel(*served_args, retriever=retriever, top_k=rag_top_k,
                                vocab_size=lm.config.vocab_size)
    else:
        served = ServedModel(*served_args, vocab_size=lm.config.vocab_size, vision=vision)
    app = create_app(AsyncEngine(llm, max_pending=max_pending), served, api_key=api_key,
                     allowed_hosts=allowed_host_names(host, allowed_hosts.split(",")),
                     cors_origins=[o.strip() for o in cors_origins.split(",") if o.strip()], rails=rails,
                     embedder=embedder)
    if host not in ("127.0.0.1", "localhost", "::1") and not api_key:
        print(f"warning: serving on {host} without --api-key: anyone on your network can use it", file=sys.stderr)
    print(f"lmforge: serving {served.name!r} on http://{host}:{port}/v1, chat page http://{host}:{port}/ "
          f"({llm.block_manager.num_blocks} KV blocks of {block_size} tokens)", file=sys.stderr)
    uvicorn.run(app, host=host, port=port, log_level=log_level)


def _rag_parts(embedding_model: str | None, rag: Path | None, device):
    """(embedder for /v1/embeddings or None, retriever for --rag or None); the index's own embedding model is
    reused when it is the same as --embedding-model."""
    from lmforge.rag.embedder import load_embedder

    embedder = load_embedder(embedding_model, device=device) if embedding_model else None
    if rag is None:
        return embedder, None
    from lmforge.rag.index import RagIndex
    from lmforge.rag.retrieval import Retriever

    index = RagIndex.open(rag)
    same = embedder is not None and embedder.name == index.embedding_model
    return embedder, Retriever(index, embedder if same else load_embedder(index.embedding_model, device=device))
