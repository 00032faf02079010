"""The demo's claim, checked with the bundled model: questions worded unlike their FAQ entry still find it."""

import json
import re

from typer.testing import CliRunner

from searcher.cli import app
from searcher.demo import example_file, run_demo

STOPWORDS = set(
    """
a about above after again against all am an and any are as at be because been before being below between both but by
can could did do does doing don down during each few for from further had has have having he her here hers him his how
i if in into is it its itself just me more most my myself no nor not now of off on once only or other our ours out over
own same she should so some such than that the their them then there these they this those through to too under until
up very was we were what when where which while who whom why will with would you your yours yourself i'm can't don't
""".split()
)


def content_words(text):
    return {word for word in re.findall(r"[a-z0-9']+", text.lower()) if word not in STOPWORDS}


def shares_stem(a, b):
    return a[:5] == b[:5] or a.startswith(b) or b.startswith(a)


def test_demo_questions_share_no_content_words_with_their_entry():
    faq = {entry["id"]: entry for entry in map(json.loads, example_file("faq.jsonl").read_text().splitlines())}
    questions = [json.loads(line) for line in example_file("demo_questions.jsonl").read_text().splitlines()]
    assert len(faq) >= 50 and len(questions) >= 8
    for question in questions:
        entry = faq[question["expected"]]
        shared = [
            (q, e)
            for q in content_words(question["question"])
            for e in content_words(entry["question"] + " " + entry["answer"])
            if shares_stem(q, e)
        ]
        assert not shared, (question["question"], shared)


def test_every_demo_question_finds_its_faq_entry(tmp_path):
    answers = run_demo(tmp_path)
    assert len(answers) >= 8
    assert [a.hit.id for a in answers] == [a.expected_id for a in answers]


def test_demo_command_prints_the_matches():
    result = CliRunner().invoke(app, ["demo"])
    assert result.exit_code == 0, result.output
    assert "How do I reset my password?" in result.stdout
    assert re.search(r"(\d+) of \1 questions found their FAQ entry", result.stdout)
