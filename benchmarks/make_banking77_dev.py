"""A FAQ-style development split built only from Banking77's *training* utterances (never its test set).

    python benchmarks/make_banking77_dev.py ../shared/datasets/banking77 OUT_DIR

A fixed-seed 20 % of the training utterances become queries; the other 80 % are the corpus; a query's
relevant documents are the corpus utterances of its intent. Used to check that hybrid search does not
hurt paraphrase matching while its weight is tuned.
"""

import argparse
import json
import random
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="the banking77 directory (corpus.jsonl with metadata.intent)")
    parser.add_argument("out", type=Path, help="directory to write corpus.jsonl, queries.jsonl and qrels/dev.tsv to")
    args = parser.parse_args()
    source, out = args.source, args.out
    rows = [json.loads(line) for line in (source / "corpus.jsonl").open(encoding="utf-8")]
    random.Random(77).shuffle(rows)
    cut = len(rows) // 5
    queries, corpus = rows[:cut], rows[cut:]
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in corpus)
    with (out / "queries.jsonl").open("w", encoding="utf-8") as handle:
        handle.writelines(json.dumps({"_id": row["_id"], "text": row["text"]}) + "\n" for row in queries)
    by_intent: dict[str, list[str]] = {}
    for row in corpus:
        by_intent.setdefault(row["metadata"]["intent"], []).append(row["_id"])
    with (out / "qrels" / "dev.tsv").open("w", encoding="utf-8") as handle:
        handle.write("query-id\tcorpus-id\tscore\n")
        for row in queries:
            handle.writelines(f"{row['_id']}\t{doc}\t1\n" for doc in by_intent[row["metadata"]["intent"]])
    print(f"{len(corpus)} documents, {len(queries)} queries -> {out}")


if __name__ == "__main__":
    main()
