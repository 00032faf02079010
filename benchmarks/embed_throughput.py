"""Documents/s of one embedding worker on one device (a GPU or the CPU): what each Ray actor delivers.

    python benchmarks/embed_throughput.py ../shared/datasets/scifact --device cuda [--documents 20000]
        [--batches 64:16384 256:65536] [--model DIR] [--command] [--reference]

The first --documents documents of a BEIR corpus (the corpus repeated when it is smaller) go through
`Embedder.embed_documents`, the function a Ray actor (and the local path) runs on its share, with the model
loaded and warm: tokenization included, model load excluded. For each batch setting (texts:tokens per
forward pass), documents/s, and how the time splits between tokenizing and the model.
--command also times the whole `searcher index` command on that device (start-up, model load, SQLite,
FAISS: the driver's share of a Ray run included); --reference times sentence-transformers' encode on the
same texts and device (fp32, and searcher's precision; batch size 64). Prints Markdown.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from searcher.config import BUNDLED_MODEL, EmbeddingSettings
from searcher.embedder import Embedder, locate_model
from searcher.sources import read_records

WARM_UP_DOCUMENTS = 256


def timed_embedding(
    embedder: Embedder, documents: list[tuple[str, tuple[str, ...]]], batch_size: int, batch_tokens: int
) -> tuple[float, float, float]:
    """Seconds in all, tokenizing, and in the model, for embedding DOCUMENTS once."""
    embedder.tokenize([text for text, _ in documents])  # warms the tokenizer's caches as a long run would
    tokenize_started = time.perf_counter()
    embedder.tokenize([text for text, _ in documents])
    tokenize_seconds = time.perf_counter() - tokenize_started
    _synchronize(embedder.device)
    started = time.perf_counter()
    model_seconds = sum(batch.model_seconds for batch in embedder.embed_documents(documents, batch_size, batch_tokens))
    _synchronize(embedder.device)
    return time.perf_counter() - started, tokenize_seconds, model_seconds


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def command_seconds(source: Path, model: str, device: str, batch_size: int, batch_tokens: int) -> float:
    with tempfile.TemporaryDirectory(prefix="searcher-throughput-") as home:
        started = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "searcher",
                "index",
                str(source),
                "--index",
                "t",
                "--home",
                home,
                "--model",
                model,
                "--device",
                device,
                "--batch-size",
                str(batch_size),
                "--batch-tokens",
                str(batch_tokens),
            ],
            check=True,
            capture_output=True,
            env=os.environ | {"HF_HUB_OFFLINE": "1"},
        )
        return time.perf_counter() - started


def reference_seconds(model: str, device: str, precision: str, texts: list[str]) -> float:
    from sentence_transformers import SentenceTransformer

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    encoder = SentenceTransformer(str(locate_model(model)), device=device, model_kwargs={"dtype": dtype})
    encoder.encode(texts[:WARM_UP_DOCUMENTS], batch_size=64)
    _synchronize(torch.device(device))
    started = time.perf_counter()
    encoder.encode(texts, batch_size=64)
    _synchronize(torch.device(device))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("corpus", type=Path, help="a BEIR directory (corpus.jsonl)")
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument(
        "--batches", nargs="+", default=["64:16384", "256:65536", "512:131072"], help="TEXTS:TOKENS per forward pass"
    )
    parser.add_argument("--model", default=BUNDLED_MODEL)
    parser.add_argument("--precision", default="auto")
    parser.add_argument("--command", action="store_true", help="also time the whole `searcher index` command")
    parser.add_argument("--reference", action="store_true", help="also time sentence-transformers' encode")
    args = parser.parse_args()

    corpus = list(read_records(args.corpus / "corpus.jsonl"))
    records = list(itertools.islice(itertools.cycle(corpus), args.documents))
    documents = [(record.text, record.phrasings) for record in records]
    embedder = Embedder(EmbeddingSettings(model=args.model, precision=args.precision), args.device)
    list(embedder.embed_documents(documents[:WARM_UP_DOCUMENTS]))
    tokens = sum(len(ids) for ids in embedder.tokenize([text for text, _ in documents]).ids)
    name = (
        torch.cuda.get_device_name(embedder.device)
        if embedder.device.type == "cuda"
        else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    print(
        f"# {name}; torch {torch.__version__}; precision {embedder.precision}; "
        f"{len(documents):,} documents of {args.corpus.name} "
        f"({tokens / len(documents):.0f} tokens each on average, cut at {embedder.max_length}); {os.cpu_count()} CPUs"
    )
    print("\n| run | batch (texts / tokens) | seconds | documents/s | tokenizing | model |")
    print("|---|---|---|---|---|---|")
    settings = [tuple(int(part) for part in batch.split(":")) for batch in args.batches]
    for batch_size, batch_tokens in settings:
        seconds, tokenize_seconds, model_seconds = timed_embedding(embedder, documents, batch_size, batch_tokens)
        print(
            f"| `embed_documents` (one actor) | {batch_size} / {batch_tokens:,} | {seconds:.2f} | "
            f"{len(documents) / seconds:,.0f} | "
            f"{tokenize_seconds:.2f} s | {model_seconds:.2f} s |",
            flush=True,
        )
    if args.command:
        with tempfile.TemporaryDirectory(prefix="searcher-source-") as folder:
            source = Path(folder) / "documents.jsonl"
            with source.open("w", encoding="utf-8") as handle:
                for number, record in enumerate(records):
                    handle.write(json.dumps({"id": str(number), "text": record.text}) + "\n")
            for batch_size, batch_tokens in settings:
                seconds = command_seconds(source, args.model, str(embedder.device.type), batch_size, batch_tokens)
                print(
                    f"| `searcher index` command | {batch_size} / {batch_tokens:,} | {seconds:.2f} | "
                    f"{len(documents) / seconds:,.0f} | | |",
                    flush=True,
                )
    if args.reference:
        for precision in dict.fromkeys(["fp32", embedder.precision]):
            seconds = reference_seconds(
                args.model, str(embedder.device.type), precision, [text for text, _ in documents]
            )
            print(
                f"| sentence-transformers encode, {precision} | 64 / - | {seconds:.2f} | "
                f"{len(documents) / seconds:,.0f} | | |",
                flush=True,
            )


if __name__ == "__main__":
    main()
