"""The demo: a support FAQ indexed with the bundled model, answering questions worded unlike their entries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import SourceError
from .index import Index
from .search import Hit
from .sources import read_records

# A wheel carries the examples inside the package; an editable install reads them from the checkout.
EXAMPLE_DIRECTORIES = (Path(__file__).parent / "examples", Path(__file__).parent.parent / "examples")


@dataclass(frozen=True)
class DemoAnswer:
    """A demo question, the FAQ entry it should find, and the best hit."""

    question: str
    expected_id: str
    hit: Hit
    matched_question: str

    @property
    def correct(self) -> bool:
        return self.hit.id == self.expected_id


def example_file(name: str) -> Path:
    for directory in EXAMPLE_DIRECTORIES:
        if (directory / name).is_file():
            return directory / name
    raise SourceError(f"example file {name} is missing from this installation")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run_demo(home: str | Path) -> list[DemoAnswer]:
    """Index examples/faq.jsonl under HOME and answer every question of examples/demo_questions.jsonl."""
    faq_file = example_file("faq.jsonl")
    faq_questions = {entry["id"]: entry["question"] for entry in read_jsonl(faq_file)}
    with Index.create("faq", home=home) as index:
        index.add(read_records(faq_file))
        questions = read_jsonl(example_file("demo_questions.jsonl"))
        hits = index.search_many([entry["question"] for entry in questions], k=1)
    return [
        DemoAnswer(entry["question"], entry["expected"], found[0], faq_questions[found[0].id])
        for entry, found in zip(questions, hits, strict=True)
    ]
