"""How close the model's forward passes come to what this CPU's matrix kernels can do.

    python benchmarks/model_flops.py ../shared/datasets [--precision auto] [--seconds 3]

1. Kernels: a plain matrix product of each shape the model's linear layers run (hidden → hidden for
   attention's projections, hidden → intermediate and back for the feed-forward part, over the padded tokens
   of the median batch), in the model's precision, on the model thread: TFLOP/s each.
2. Model: the STS-B test sentences (1,379 pairs, both sides: 2,758 sentences) through `Embedder.embed`
   (length-sorted batches of 64), warm: sentences/s, and TFLOP/s counted from the padded batches actually run:
   every linear layer (2 · tokens · inputs · outputs) plus attention's two products (2 · 2 · length² · hidden
   per sequence and layer). Pooling, softmax, layer norms and GELU are left out of the count (they are not
   matrix products), so the share below is a floor.

The share of the model's TFLOP/s over the kernels' (their mean, weighted by the FLOPs each shape takes in the
model) says how much room is left in the kernels themselves rather than around them.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import machine  # benchmarks/machine.py: this script's own folder is first on the path
import torch

from searcher import EmbeddingSettings
from searcher.config import BATCH_SIZE, BATCH_TOKENS
from searcher.embedder import Embedder, length_batches, on_model_thread
from searcher.evaluate import load_sts

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def timed(work: Callable[[], object], seconds: float) -> float:
    """Seconds per call of WORK, warm, over about SECONDS."""
    work()
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        work()
        calls += 1
    return (time.perf_counter() - started) / calls


def kernel_tflops(shapes: dict[str, tuple[int, int, int]], dtype: torch.dtype, seconds: float) -> dict[str, float]:
    """TFLOP/s of a plain (m × k) @ (k × n) product per named shape, on the model thread."""

    def measure() -> dict[str, float]:
        result = {}
        for name, (m, k, n) in shapes.items():
            left, right = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
            with torch.inference_mode():
                result[name] = 2 * m * k * n / timed(lambda: left @ right, seconds) / 1e12  # noqa: B023
        return result

    return on_model_thread(measure)


def model_widths(embedder: Embedder) -> tuple[int, int]:
    """The model's hidden and intermediate (feed-forward) widths, from its BERT-style config.json."""
    config = json.loads((embedder.model_dir / "config.json").read_text(encoding="utf-8"))
    return config["hidden_size"], config["intermediate_size"]


def model_flops(embedder: Embedder, lengths: list[int]) -> tuple[float, dict[str, float]]:
    """FLOPs of the matrix products of one `embed` of texts of these token LENGTHS, in its padded batches:
    in all, and per linear shape (for weighting the kernels)."""
    hidden, intermediate = model_widths(embedder)
    layers = embedder.layers
    per_shape = {"hidden → hidden": 0.0, "hidden → intermediate": 0.0, "intermediate → hidden": 0.0}
    attention = 0.0
    for batch in length_batches(lengths, BATCH_SIZE, BATCH_TOKENS):
        padded = max(lengths[i] for i in batch)
        tokens = len(batch) * padded
        per_shape["hidden → hidden"] += layers * 4 * 2 * tokens * hidden * hidden  # query, key, value, output
        per_shape["hidden → intermediate"] += layers * 2 * tokens * hidden * intermediate
        per_shape["intermediate → hidden"] += layers * 2 * tokens * intermediate * hidden
        attention += layers * len(batch) * 2 * 2 * padded * padded * hidden
    return sum(per_shape.values()) + attention, per_shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", type=Path, help="the folder holding stsbenchmark/")
    parser.add_argument("--precision", default="auto", help="the model's precision (default: auto, as a user gets)")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per measurement")
    args = parser.parse_args()
    print(machine.cpu_line(f"Python {platform.python_version()}"), flush=True)
    pairs = load_sts(args.datasets / "stsbenchmark" / "sts-test.csv")
    texts = [text for first, second, _ in pairs for text in (first, second)]
    embedder = Embedder(EmbeddingSettings(precision=args.precision))
    lengths = [len(ids) for ids in embedder.tokenize(texts).ids]
    total, per_shape = model_flops(embedder, lengths)
    seconds = timed(lambda: embedder.embed(texts), args.seconds)
    model = total / seconds / 1e12
    batches = length_batches(lengths, BATCH_SIZE, BATCH_TOKENS)
    typical_tokens = sorted(len(batch) * max(lengths[i] for i in batch) for batch in batches)[len(batches) // 2]
    hidden, intermediate = model_widths(embedder)
    shapes = {
        "hidden → hidden": (typical_tokens, hidden, hidden),
        "hidden → intermediate": (typical_tokens, hidden, intermediate),
        "intermediate → hidden": (typical_tokens, intermediate, hidden),
    }
    kernels = kernel_tflops(shapes, DTYPES.get(embedder.precision, torch.float32), args.seconds)
    weighted = sum(kernels[name] * flops for name, flops in per_shape.items()) / sum(per_shape.values())
    print(
        f"\n{len(texts):,} STS-B test sentences, {sum(lengths) / len(lengths):.1f} tokens each, {len(batches)} "
        f"batches (median {typical_tokens} padded tokens), precision {embedder.precision}\n"
    )
    print("| what | shape (m × k × n) | TFLOP/s |\n|---|---|---|")
    for name, (m, k, n) in shapes.items():
        print(f"| matrix product, {name} | {m} × {k} × {n} | {kernels[name]:.3f} |")
    print(f"| kernels, weighted as the model uses them | | {weighted:.3f} |")
    print(f"| the model (`Embedder.embed`, {len(texts) / seconds:,.0f} sentences/s) | | {model:.3f} |")
    print(f"\nThe model reaches {model / weighted:.0%} of the kernels' TFLOP/s (matrix products only counted).")


if __name__ == "__main__":
    main()
