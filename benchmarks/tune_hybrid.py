"""Choose the hybrid keyword weight on a training split (never on a test split that gets reported).

    python benchmarks/tune_hybrid.py ../shared/datasets/scifact --split train --keep /tmp/scifact-index

Indexes the corpus once (or reuses the index kept from an earlier run), then scores hybrid search for each
keyword weight; dense (weight 0) and keyword-only rows are printed for reference.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from searcher import Index, Settings, read_records
from searcher.evaluate import RETRIEVAL_DEPTH, load_dataset, retrieval_metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dataset")
    parser.add_argument("--split", default="train")
    parser.add_argument("--weights", default="0,0.02,0.05,0.1,0.15,0.2,0.3,0.5")
    parser.add_argument("--keep", type=Path, required=True, help="index directory to build once and reuse")
    args = parser.parse_args()
    dataset = load_dataset(args.dataset, args.split)
    if args.keep.exists():
        index = Index.open(args.keep)
    else:
        started = time.perf_counter()
        index = Index.create(args.keep, Settings())
        index.add(read_records(dataset.path))
        print(f"# indexed {len(index):,} documents in {time.perf_counter() - started:.0f} s")
    print(f"# {dataset.name} {args.split}: {len(dataset.queries):,} judged queries")
    print(f"{'mode':<8}{'weight':>8}{'ndcg@10':>9}{'recall@100':>12}{'top1':>7}")
    runs = [("keyword", 0.0)] + [("hybrid", float(w)) for w in args.weights.split(",")]
    for mode, weight in runs:
        rankings = {
            qid: [h.id for h in index.search(text, RETRIEVAL_DEPTH, mode=mode, keyword_weight=weight)]
            for qid, text in dataset.queries.items()
        }
        m = retrieval_metrics(rankings, dataset.qrels)
        print(f"{mode:<8}{weight:>8.2f}{m['ndcg_at_10']:>9.4f}{m['recall_at_100']:>12.4f}{m['top1']:>7.4f}", flush=True)


if __name__ == "__main__":
    main()
