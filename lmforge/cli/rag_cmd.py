"""`lmforge rag ...`: build a persistent hybrid index of documents, ask questions answered with citations, and
measure retrieval and answers on the project's invented-facts set."""

import json
import sys
from pathlib import Path

import typer

from lmforge.cli import sampling_options as opt
from lmforge.cli.device_option import DEVICE, pick_device, place
from lmforge.common.errors import LmforgeError
from lmforge.common.threads import set_threads

app = typer.Typer(help="Retrieval-augmented generation: index documents, ask with citations, evaluate.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

EMBEDDING_MODEL = typer.Option("all-minilm-l6-v2", "--embedding-model", "-e",
                               help="all-minilm-l6-v2, a sentence-transformers directory or any lmforge model.")
MODE = typer.Option("hybrid", "--mode", help="Retrieval: hybrid (dense + BM25 fused by RRF), dense or bm25.")
TOP_K = typer.Option(3, "--top-k", "-k", min=1, max=20, help="Chunks put into the prompt.")


@app.command("index")
def index(
    docs: list[str] = typer.Argument(..., help="Files or directories: .txt .md .rst .html .jsonl[.gz|.zst] .parquet."),
    out: Path = typer.Option(..., "--out", "-o", help="The index directory (created, or updated incrementally)."),
    embedding_model: str = EMBEDDING_MODEL,
    chunk_size: int = typer.Option(128, help="Tokens per chunk (of the embedding model's tokenizer)."),
    chunk_overlap: int = typer.Option(16, help="Tokens shared by consecutive chunks."),
    commit_every: int = typer.Option(64, "--commit-every", min=1, help="Source files per transaction (a killed "
                                     "build loses at most this many; re-running it finishes the job)."),
    threads: int = opt.THREADS,
    device: str = DEVICE,
) -> None:
    """Index DOCS into OUT: chunk, embed, store. Unchanged files are skipped, changed ones replaced."""
    from lmforge.rag.chunking import ChunkSpec
    from lmforge.rag.sources import find_sources

    spec = ChunkSpec(chunk_size, chunk_overlap)
    sources = find_sources(docs)
    set_threads(threads)
    where = pick_device(device)
    from lmforge.rag.embedder import load_embedder
    from lmforge.rag.index import RagIndex

    embedder = load_embedder(embedding_model, device=where)
    rag = RagIndex.create_or_open(out, embedder, spec)
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    with Progress(TextColumn("indexing sources"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, disable=not console.is_terminal, transient=True) as progress:
        task = progress.add_task("index", total=len(sources))
        stats = rag.build(sources, embedder, group=commit_every,
                          progress=lambda done, total: progress.update(task, completed=done))
    n = stats.chunks_added
    print(json.dumps({"sources_added": stats.sources_added, "sources_replaced": stats.sources_replaced,
                      "sources_unchanged": stats.sources_unchanged, "chunks_added": n,
                      "chunks_duplicate": stats.chunks_duplicate, "chunks_removed": stats.chunks_removed,
                      "chunks_total": rag.catalog.count(), "seconds": round(stats.seconds, 2),
                      "chunks_per_s": round(n / stats.seconds, 1) if n and stats.seconds else None}))


@app.command("delete")
def delete(index: Path = typer.Argument(..., help="The index directory."),
           sources: list[str] = typer.Argument(..., help="Source files to forget (paths as indexed).")) -> None:
    """Remove SOURCES (and the chunks only they held) from INDEX."""
    from lmforge.rag.index import RagIndex

    removed = RagIndex.open(index).delete(sources)
    print(json.dumps({"sources_deleted": len(sources), "chunks_removed": removed}))


@app.command("info")
def info(index: Path = typer.Argument(..., help="The index directory.")) -> None:
    """Settings, sizes and sources of INDEX, as JSON."""
    from lmforge.rag.index import RagIndex

    rag = RagIndex.open(index)
    meta = {k: v for k, v in rag.catalog.meta.items() if k != "generation"}
    print(json.dumps({**meta, "chunks": rag.catalog.count(), "sources": sorted(rag.catalog.sources())}, indent=2))


@app.command("ask")
def ask(
    index: Path = typer.Argument(..., help="The index directory."),
    question: str = typer.Argument(..., help="The question."),
    model: str = opt.MODEL,
    top_k: int = TOP_K,
    mode: str = MODE,
    max_new_tokens: int = typer.Option(64, "--max-new-tokens", "-n", min=1, help="Most tokens in the answer."),
    as_json: bool = typer.Option(False, "--json", help="Print the answer and its sources as one JSON object."),
    dtype: str = opt.DTYPE,
    threads: int = opt.THREADS,
    device: str = DEVICE,
) -> None:
    """Answer QUESTION from INDEX with citations [n] (greedy decoding); the sources are printed after it."""
    from lmforge.rag.index import RagIndex

    rag = RagIndex.open(index)
    set_threads(threads)
    llm, lm, retriever = _answering(rag, model, dtype, pick_device(device, dtype))
    from lmforge.rag.answer import answer_questions

    hits = retriever.retrieve(question, top_k, mode)
    answer = answer_questions(llm, lm.tokenizer, lm.stop_token_ids(), [question], [hits], max_new_tokens)[0]
    if as_json:
        print(json.dumps({"answer": answer.text, "sources": answer.sources()}, ensure_ascii=False))
        return
    print(answer.text)
    print("\nSources:")
    for source in answer.sources():
        mark = "*" if source["cited"] else " "
        print(f"{mark}[{source['index']}] {source['source']}:{source['start']}-{source['end']}  "
              f"{source['text'][:80]!r}")


def _answering(rag, model: str, dtype: str, device):
    from lmforge.engine.llm import LLM, EngineConfig
    from lmforge.formats.loader import load
    from lmforge.model.inference import prepare_for_inference
    from lmforge.rag.embedder import load_embedder
    from lmforge.rag.retrieval import Retriever

    retriever = Retriever(rag, load_embedder(rag.embedding_model, device=device))
    lm = place(load(model, dtype=dtype), device)
    if lm.tokenizer is None or lm.tokenizer.chat_template is None:
        raise LmforgeError(f"{model} has no tokenizer with a chat template; rag ask needs a chat model")
    prepare_for_inference(lm.model)
    return LLM(lm.model, lm.tokenizer, EngineConfig()), lm, retriever


@app.command("map")
def map_command(
    index: Path = typer.Argument(..., help="The index directory."),
    out: Path = typer.Option(..., "--out", "-o", help="The PNG to write."),
    color: str = typer.Option("source", "--color", help="Colour points by source (file) or by k-means cluster."),
    clusters: int = typer.Option(8, "--clusters", min=1, max=100, help="k of k-means with --color cluster."),
) -> None:
    """Draw INDEX's chunk embeddings in 2-D (PCA), coloured by source or k-means cluster."""
    from lmforge.rag.index import RagIndex
    from lmforge.rag.projection import draw_map

    print(json.dumps(draw_map(RagIndex.open(index), out, color, clusters)))


@app.command("facts")
def facts(out: Path = typer.Option(..., "--out", "-o", help="Directory for corpus/ and questions.jsonl.")) -> None:
    """Write the project's invented-facts evaluation set (towns and people that do not exist)."""
    from lmforge.rag.facts import write_fact_set

    corpus, questions = write_fact_set(out)
    print(json.dumps({"corpus": str(corpus), "questions": str(questions)}))


@app.command("eval")
def evaluate(
    index: Path = typer.Argument(..., help="An index of the facts corpus (lmforge rag index CORPUS --out INDEX)."),
    questions: Path = typer.Argument(..., help="questions.jsonl from `lmforge rag facts` (corpus/ beside it)."),
    model: str = opt.MODEL,
    top_k: int = TOP_K,
    mode: str = MODE,
    reverse_sources: bool = typer.Option(False, "--reverse-sources", help="Give the retrieved chunks worst first "
                                         "(the gold one last): do the citations follow the content?"),
    dtype: str = opt.DTYPE,
    threads: int = opt.THREADS,
    device: str = DEVICE,
) -> None:
    """Recall@5 of dense, BM25 and hybrid retrieval; answer accuracy with and without RAG; citations of gold chunks."""
    from lmforge.rag.evaluate import answer_accuracy, gold_chunks, recall_at_k
    from lmforge.rag.facts import read_questions
    from lmforge.rag.index import RagIndex

    qs = read_questions(questions)
    rag = RagIndex.open(index)
    set_threads(threads)
    llm, lm, retriever = _answering(rag, model, dtype, pick_device(device, dtype))
    gold = [gold_chunks(rag, q, questions.parent / "corpus") for q in qs]
    if not all(gold):
        raise LmforgeError(f"{index} holds no chunk covering the gold sentence of {sum(not g for g in gold)} "
                           f"question(s): index {questions.parent / 'corpus'} with it")
    report = {"questions": len(qs), "recall@5": recall_at_k(retriever, qs, gold, 5)}
    report.update(answer_accuracy(llm, lm.tokenizer, lm.stop_token_ids(), retriever, qs, gold, top_k, mode,
                                  reverse_sources))
    answers = report.pop("answers")
    for row in answers:
        print(json.dumps(row, ensure_ascii=False), file=sys.stderr)
    print(json.dumps(report))
