"""Long documents as passages: windowing, spans, titles, upserts, checks, search results, settings and upgrades."""

import json
import re
import sqlite3
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from searcher import EmbeddingSettings, Index, Record, Settings
from searcher.cli import app
from searcher.config import parse_chunk
from searcher.errors import ConfigError
from searcher.passages import EARLIEST_BREAK, MAX_PASSAGES, PARAGRAPH, SENTENCE, breaks, windows
from searcher.paths import DOCS_FILE
from searcher.server import ServerConfig, create_app
from searcher.sources import read_records

runner = CliRunner()
WORDS = (
    "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa quebec "
    "romeo sierra tango uniform victor whiskey yankee zulu"
).split()


def page(topic: str, paragraphs: int = 6, inserts: dict[int, str] | None = None) -> str:
    """A text of PARAGRAPHS paragraphs of five distinct sentences about TOPIC (about 60 tokens each); INSERTS
    adds a sentence at the end of the paragraph it names."""
    inserts = inserts or {}
    blocks = []
    for number in range(paragraphs):
        sentences = [
            f"Step {number * 5 + i} of the {topic} guide covers the {WORDS[(number * 5 + i) % len(WORDS)]} setting."
            for i in range(5)
        ]
        blocks.append(" ".join(sentences + ([inserts[number]] if number in inserts else [])))
    return "\n\n".join(blocks)


LONG = page("garden")
OTHER_LONG = page("kitchen", 5)
SHORTS = [
    Record("s1", "How do I reset my password?"),
    Record("s2", "Where are my invoices for billing?"),
    Record("s3", "Does the app have a dark mode?"),
]


def tokens(embedder, text: str) -> list[int]:
    return embedder.tokenizer.pieces([text])[0][0]


def token_ends(embedder, text: str) -> list[int]:
    return [end for _, end in embedder.tokenizer.pieces([text])[1][0]]


def spans_of(index, document_id: str) -> list[tuple[int, int]]:
    return [owner.span for found, owner, _ in index.stored_vectors() if found == document_id and owner.phrasing is None]


def execute(index_path, statement, *values):
    """Change docs.sqlite behind searcher's back, as damage or an older searcher would."""
    connection = sqlite3.connect(index_path / DOCS_FILE)
    with connection:
        connection.execute(statement, values)
    connection.close()


@pytest.fixture(scope="module")
def cut_embedder(tiny_model):
    """The tiny model with passages turned off: long texts are cut to its limit."""
    from searcher.embedder import Embedder

    return Embedder(EmbeddingSettings(str(tiny_model), precision="fp32", chunk="none"), "cpu")


# windows() and breaks(): pure functions on token positions


@settings(max_examples=300, deadline=None)
@given(
    count=st.integers(0, 400),
    size=st.integers(1, 64),
    share=st.floats(0, 0.99),
    paragraphs=st.lists(st.integers(1, 399), max_size=20),
    sentences=st.lists(st.integers(1, 399), max_size=60),
)
def test_windows_cover_every_token_in_overlapping_ranges_of_at_most_size(count, size, share, paragraphs, sentences):
    overlap = int(size * share)
    paragraphs, sentences = sorted(set(paragraphs)), sorted(set(sentences) | set(paragraphs))
    ranges = windows(count, size, overlap, paragraphs, sentences)
    assert ranges[0][0] == 0 and ranges[-1][1] == count
    assert all(0 < end - first <= size or count == 0 for first, end in ranges)
    for (first, end), (next_first, next_end) in zip(ranges, ranges[1:], strict=False):
        assert first < next_first <= end  # progress, and no token left out
        if overlap:
            assert next_first < end  # neighbours share tokens
        if overlap <= size // 2:  # as the embedder asks for them: a window never lies inside the previous one
            assert end < next_end
        # a window ends at a break in its second half, or else at its full size
        assert end == first + size or (end in sentences and end > first + size * EARLIEST_BREAK)


def test_a_window_ends_at_a_paragraph_break_in_its_second_half_else_a_sentence_break_else_full_size():
    assert windows(100, 40, 10, paragraphs=[30], sentences=[25, 30, 35])[0] == (0, 30)
    assert windows(100, 40, 10, paragraphs=[], sentences=[25, 30, 35])[0] == (0, 35)
    # A paragraph in the first half would waste the window: the last sentence break is taken instead.
    assert windows(100, 40, 10, paragraphs=[10], sentences=[10, 35])[0] == (0, 35)
    assert windows(100, 40, 10, paragraphs=[10], sentences=[5, 10, 15])[0] == (0, 40)
    assert windows(100, 40, 10)[0] == (0, 40)
    # The next window starts at a sentence start within the overlap if there is one.
    assert windows(100, 40, 10, sentences=[27, 35])[1][0] == 27
    assert windows(100, 40, 10)[1][0] == 30


def test_a_text_that_fits_is_one_window():
    assert windows(40, 40, 10, [10, 20], [5, 10, 15, 20]) == [(0, 40)]
    assert windows(7, 40, 0) == [(0, 7)]


@pytest.mark.parametrize(("size", "overlap"), [(0, 0), (-3, 0), (10, 10), (10, 11), (10, -1)])
def test_impossible_window_sizes_and_overlaps_are_refused(size, overlap):
    with pytest.raises(ValueError, match="cannot overlap"):
        windows(100, size, overlap)


def test_breaks_are_the_tokens_that_begin_a_sentence_or_paragraph():
    text = "One two. Three four!\n\nFive six? Seven"
    starts = [match.start() for match in re.finditer(r"\w+|[.!?]", text)]
    words = re.findall(r"\w+|[.!?]", text)
    assert [words[i] for i in breaks(text, starts, SENTENCE)] == ["Three", "Five", "Seven"]
    assert [words[i] for i in breaks(text, starts, PARAGRAPH)] == ["Five"]
    assert breaks("No break at all", [0, 3, 9, 12], SENTENCE) == []


# Embedder.passages: spans and token ids


def test_passage_spans_are_increasing_overlapping_pieces_of_the_text_up_to_its_end(tiny_embedder):
    assert len(tokens(tiny_embedder, LONG)) > 2 * tiny_embedder.chunk  # several passages
    (split,) = tiny_embedder.passages([(LONG, "")])
    assert not split.cut and len(split.ids) == len(split.spans) >= 3
    assert split.spans[0][0] == 0 and split.spans[-1][1] == len(LONG)
    for (start, end), (next_start, next_end) in zip(split.spans, split.spans[1:], strict=False):
        assert 0 <= start < next_start < end < next_end <= len(LONG)
    for ids, (start, end) in zip(split.ids, split.spans, strict=True):
        assert len(ids) <= tiny_embedder.max_length
        assert ids == [101, *tokens(tiny_embedder, LONG[start:end]), 102]  # the window's tokens, whole
        assert LONG[start:end] == LONG[start:end].strip()
        assert LONG[end - 1] == "."  # each passage ends at a sentence's end...
        assert start == 0 or LONG[start - 1].isspace() and LONG[start:].startswith("Step")  # ...starts at one


def test_a_text_past_max_passages_windows_is_cut_and_said_to_be(tiny_embedder):
    text = "word " * (MAX_PASSAGES * tiny_embedder.chunk)
    (split,) = tiny_embedder.passages([(text, "")])
    assert len(split.spans) == MAX_PASSAGES and split.cut
    assert split.spans[-1][1] < len(text.rstrip())


def test_every_passage_of_a_titled_record_starts_with_the_title(tiny_embedder, tmp_path):
    source = tmp_path / "corpus.jsonl"
    rows = [{"_id": "titled", "title": "Solar panel maintenance", "text": LONG}, {"_id": "bare", "text": LONG}]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    titled, bare = read_records(source)
    assert titled.heading == "Solar panel maintenance" and titled.text == f"{titled.heading} {LONG}"
    assert bare.heading == ""
    title = tokens(tiny_embedder, titled.heading)
    with_title, without = tiny_embedder.passages([(titled.text, titled.heading), (bare.text, bare.heading)])
    assert len(with_title.ids) > 2 and len(without.ids) > 2
    for ids, (start, end) in zip(with_title.ids, with_title.spans, strict=True):
        assert ids[: 1 + len(title)] == [101, *title]
        assert ids[1 + len(title) : -1] == tokens(tiny_embedder, titled.text[start:end])
        assert start >= len(titled.heading)  # the title leads each passage; the span is the passage's own text
    assert with_title.spans[0][0] == len(titled.heading) + 1
    assert all(ids[1 : 1 + len(title)] != title for ids in without.ids)
    assert without.ids[0][1:-1] == tokens(tiny_embedder, LONG[: without.spans[0][1]])
    # Stored as embedded: the index keeps each passage's span, and the heading for embedding again.
    index = Index.create(tmp_path / "titled", embedder=tiny_embedder)
    report = index.add([titled, bare])
    assert (report.split, report.passages) == (2, len(with_title.spans) + len(without.spans))
    assert spans_of(index, "titled") == with_title.spans and spans_of(index, "bare") == without.spans


def test_a_short_text_is_one_vector_of_the_whole_text_equal_to_its_embedding(tiny_embedder, tiny_index):
    text = "A short note about the garden."
    index = tiny_index([Record("short", text)])
    [(document_id, owner, vector)] = list(index.stored_vectors())
    assert (document_id, owner.span, owner.phrasing) == ("short", (0, len(text)), None)
    np.testing.assert_allclose(vector, tiny_embedder.embed([text])[0], atol=1e-6)
    (passages,) = tiny_embedder.passages([(text, "A short note")])  # a heading adds nothing to a text that fits
    assert passages.ids == [[101, *tokens(tiny_embedder, text), 102]] and passages.spans == [(0, len(text))]


def test_without_passages_long_texts_are_cut_counted_and_one_vector_each(cut_embedder, tmp_path):
    index = Index.create(tmp_path / "cut", embedder=cut_embedder)
    assert (index.manifest.spec.chunk, index.manifest.spec.chunk_overlap) == (0, 0)
    report = index.add([Record("long", LONG), Record("other", OTHER_LONG), *SHORTS])
    assert (report.truncated, report.split, report.passages) == (2, 0, 5)
    assert index.vector_count == 5
    limit = cut_embedder.text_limit
    for document_id, text in (("long", LONG), ("other", OTHER_LONG)):
        [(start, end)] = spans_of(index, document_id)
        assert start == 0 and end == token_ends(cut_embedder, text)[limit - 1] < len(text)
    assert spans_of(index, "s1") == [(0, len(SHORTS[0].text))]
    # A word past the cut is found by its keyword, in the whole text: the only passage there is.
    assert "zulu" not in LONG[:end]
    hit = index.search("zulu", mode="keyword", k=1)[0]
    assert hit.id == "other" and (hit.passage.start, hit.passage.end) == (0, end)


# Writes: upserts and deletes of documents with many passages


def test_upserts_that_change_the_number_of_passages_keep_vectors_in_step(tiny_embedder, tiny_index):
    (split,) = tiny_embedder.passages([(LONG, "")])
    passages = len(split.spans)
    index = tiny_index([Record("doc", LONG), *SHORTS])
    assert (len(index), index.vector_count) == (4, passages + 3)
    short = "Now the page holds one line."
    report = index.add([Record("doc", short)])
    assert (report.updated, report.split, report.passages) == (1, 0, 1)
    assert (len(index), index.vector_count, spans_of(index, "doc")) == (4, 4, [(0, len(short))])
    report = index.add([Record("doc", LONG)])
    assert (report.updated, report.split, report.passages) == (1, 1, passages)
    assert (len(index), index.vector_count, spans_of(index, "doc")) == (4, passages + 3, split.spans)
    stored = [(found, owner.span, vector.tobytes()) for found, owner, vector in index.stored_vectors()]
    report = index.add([Record("doc", LONG), *SHORTS])
    assert (report.unchanged, report.updated, report.added, report.passages, report.split) == (4, 0, 0, 0, 0)
    assert report.model_seconds == 0
    assert [(found, owner.span, vector.tobytes()) for found, owner, vector in index.stored_vectors()] == stored
    assert index.check() == []


def test_deleting_a_long_document_removes_every_passage_vector(tiny_embedder, tiny_index):
    index = tiny_index([Record("doc", LONG), Record("other", OTHER_LONG), *SHORTS])
    (other,) = tiny_embedder.passages([(OTHER_LONG, "")])
    assert index.delete(["doc"]) == ["doc"]
    assert (len(index), index.vector_count) == (4, len(other.spans) + 3)
    assert {found for found, _, _ in index.stored_vectors()} == {"other", "s1", "s2", "s3"}
    (split,) = tiny_embedder.passages([(LONG, "")])
    for mode in ("dense", "keyword", "hybrid"):
        for start, end in split.spans:
            assert "doc" not in {hit.id for hit in index.search(LONG[start:end], k=10, mode=mode)}
    index.close()
    with Index.open(index.path) as reopened:
        assert reopened.check() == []
        assert "doc" not in {hit.id for hit in reopened.search("garden guide", k=10, mode="hybrid")}


# check and repair


def test_check_finds_a_passage_outside_its_text_and_repair_embeds_it_again(tiny_embedder, tiny_index):
    index = tiny_index([Record("doc", LONG), *SHORTS])
    assert index.check() == []
    spans = spans_of(index, "doc")
    index.close()
    execute(
        index.path,
        "UPDATE vectors SET span_end = 999999 WHERE rowid = "
        "(SELECT min(vectors.rowid) FROM vectors JOIN documents ON documents.rowid = document WHERE id = 'doc')",
    )
    with Index.open(index.path, embedder=tiny_embedder) as damaged:
        problems = damaged.check()
        assert len(problems) == 1 and "passage outside its text" in problems[0] and "'doc'" in problems[0]
        assert damaged.check() == problems  # nothing changed without repair
        assert spans_of(damaged, "doc")[0] == (spans[0][0], 999999)
        assert damaged.check(repair=True) == []
        assert damaged.check() == [] and spans_of(damaged, "doc") == spans
        start, end = spans[0]
        hit = damaged.search(LONG[start:end], k=1)[0]
        assert (hit.id, hit.passage.start, hit.passage.end) == ("doc", start, end)
        assert hit.score == pytest.approx(1.0, abs=1e-5)


# Search results


@pytest.fixture
def passage_index(tiny_index):
    """Two long documents and three short ones; words put where the tests below look for them."""
    first = page(
        "garden",
        inserts={
            0: "The zeppelin flew over the hedge.",
            4: "The zeppelin, a second zeppelin and a third zeppelin crossed the painted xylophone.",
        },
    )
    return tiny_index([Record("first", first), Record("second", OTHER_LONG), *SHORTS])


def test_each_document_is_one_hit_however_many_of_its_passages_match(passage_index):
    for mode in ("dense", "keyword", "hybrid"):
        hits = passage_index.search("Step 3 guide covers setting", k=10, mode=mode)
        ids = [hit.id for hit in hits]
        assert len(ids) == len(set(ids)) and {"first", "second"} <= set(ids)
        assert len(hits) == (2 if mode == "keyword" else 5)
        for hit in hits:
            assert hit.passage.text == hit.text[hit.passage.start : hit.passage.end] != ""


def test_a_dense_hit_shows_its_best_matching_passage_without_highlights(passage_index):
    text = next(document.text for document in passage_index.documents() if document.id == "first")
    spans = spans_of(passage_index, "first")
    assert len(spans) >= 3
    for start, end in spans[1:]:  # querying a passage's exact text finds that passage, not the first
        hit = passage_index.search(text[start:end], k=1)[0]
        assert (hit.id, hit.passage.start, hit.passage.end, hit.passage.highlights) == ("first", start, end, ())
        assert hit.score == pytest.approx(1.0, abs=1e-5)


def test_a_keyword_hit_shows_the_passage_holding_most_matched_words_with_them_highlighted(passage_index):
    hit = passage_index.search("zeppelin", mode="keyword", k=5)
    assert [h.id for h in hit] == ["first"]
    passage = hit[0].passage
    assert passage.text.count("zeppelin") == 3 and "crossed" in passage.text  # not the first passage's one
    assert [hit[0].text[start:end] for start, end in passage.highlights] == ["zeppelin"] * 3
    # Stemmed like BM25: "xylophones painting" matches "painted xylophone".
    hit = passage_index.search("xylophones painting", mode="keyword", k=5)[0]
    assert "painted xylophone" in hit.passage.text
    assert [hit.text[start:end] for start, end in hit.passage.highlights] == ["painted", "xylophone"]
    for start, end in hit.passage.highlights:
        assert hit.passage.start <= start < end <= hit.passage.end


def test_a_hybrid_hit_shows_the_dense_passage_with_the_query_words_highlighted(passage_index):
    text = next(document.text for document in passage_index.documents() if document.id == "first")
    start, end = spans_of(passage_index, "first")[1]
    query = text[start:end]
    hit = passage_index.search(query, mode="hybrid", k=3)[0]
    assert (hit.id, hit.passage.start, hit.passage.end) == ("first", start, end)
    words = set(re.findall(r"\w+", query.lower()))
    assert hit.passage.highlights
    for low, high in hit.passage.highlights:
        assert start <= low < high <= end and hit.text[low:high].lower() in words


def test_a_sentence_deep_in_a_long_page_finds_that_page_and_that_passage(bundled_embedder, tmp_path):
    topics = [
        "Your profile picture can be changed from the account page by uploading a square image.",
        "Notifications are sent by email and by push message unless you mute them in preferences.",
        "Two-factor authentication adds a code from your phone to every sign-in.",
        "Team members can be invited by email address and given the role of viewer or editor.",
        "Dark mode follows the system theme, or can be forced on in the appearance settings.",
        "Keyboard shortcuts are listed by pressing the question mark key anywhere in the app.",
        "Uploaded files larger than two gigabytes are rejected by the web client.",
        "The mobile app keeps the last hundred documents available offline.",
        "To download last month's invoices as a PDF, open Billing, choose the month and press Export.",
        "Deleted items stay in the trash for thirty days before they are removed for good.",
        "The public API is rate limited to one hundred requests per minute for each token.",
    ]
    filler = "Each section of this help page describes one part of the product in a few sentences."
    text = "\n\n".join(f"{filler} {sentence} {filler}" for sentence in topics)
    index = Index.create(tmp_path / "help", embedder=bundled_embedder)
    others = [
        Record("pricing", "Plans are billed monthly or yearly; the yearly plan costs less."),
        Record("status", "The status page shows outages and planned maintenance."),
        Record("privacy", "We never sell personal data and delete it when you close your account."),
    ]
    report = index.add([Record("help", text), *others])
    assert report.split == 1 and report.passages >= 4
    hit = index.search("how can I get my invoice as a pdf file", k=3)[0]
    assert hit.id == "help"
    assert topics[8] in hit.passage.text and hit.passage.start > 0  # the passage that says it, not the page's start
    assert topics[0] not in hit.passage.text


# JSON, CLI and HTTP


def test_query_json_and_http_search_give_the_passage(tiny_model, tmp_path):
    source = tmp_path / "pages.jsonl"
    rows = [
        {"_id": "garden", "title": "Garden guide", "text": page("garden", 4, {3: "Water the tomatoes at dawn."})},
        {"_id": "kitchen", "title": "Kitchen guide", "text": page("kitchen", 2)},
        {"_id": "short", "text": "A short page."},
    ]
    source.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    home = tmp_path / "home"
    result = runner.invoke(
        app,
        ["index", str(source), "--index", "pages", "--model", str(tiny_model), "--home", str(home)]
        + ["--chunk", "32", "--chunk-overlap", "8"],
    )
    assert result.exit_code == 0, result.output
    assert "2 long texts split into passages" in result.stdout
    info = json.loads(runner.invoke(app, ["info", "pages", "--home", str(home), "--json"]).stdout)
    assert (info["manifest"]["chunk"], info["manifest"]["chunk_overlap"]) == (32, 8)
    command = ["query", "tomatoes", "--index", "pages", "--home", str(home), "--json", "--mode", "keyword"]
    result = runner.invoke(app, command)
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    [top] = answer["results"]
    passage = top["passage"]
    assert set(passage) == {"start", "end", "text", "highlights"}
    assert top["id"] == "garden" and passage["text"] == top["text"][passage["start"] : passage["end"]]
    assert "tomatoes" in passage["text"] and len(passage["text"]) < len(top["text"]) / 2
    assert [top["text"][start:end] for start, end in passage["highlights"]] == ["tomatoes"]
    table = runner.invoke(app, ["query", "tomatoes", "--index", "pages", "--home", str(home), "--mode", "keyword"])
    assert table.exit_code == 0 and "passage" in table.stdout and "tomatoes" in table.stdout
    with TestClient(create_app(ServerConfig(("pages",), str(home)))) as client:
        deadline = time.monotonic() + 60
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        response = client.post("/v1/search", json={"index": "pages", "query": "tomatoes", "mode": "keyword"})
        assert response.status_code == 200 and response.json() == answer
        dense = client.post("/v1/search", json={"index": "pages", "query": "Water the tomatoes at dawn.", "k": 3})
        for hit in dense.json()["results"]:
            span = hit["passage"]
            assert span["text"] == hit["text"][span["start"] : span["end"]] and span["highlights"] == []
        # A page upserted with a title is stored and split as one read from a file with a title field.
        upsert = {"documents": [{"id": "shed", "title": "Shed guide", "text": page("shed", 3)}]}
        assert client.put("/v1/indexes/pages/documents", json=upsert).json()["added"] == 1
        found = client.post("/v1/search", json={"index": "pages", "query": "shed", "mode": "keyword", "k": 1})
        [shed] = found.json()["results"]
        assert shed["id"] == "shed" and shed["text"] == f"Shed guide {page('shed', 3)}"
        assert shed["passage"]["start"] >= len("Shed guide ")  # the title leads each passage; spans are the body's


# Settings


def test_chunk_settings_are_recorded_and_other_ones_refused(tiny_model, tiny_embedder, tmp_path):
    index = Index.create(tmp_path / "recorded", embedder=tiny_embedder)
    index.add(SHORTS)
    manifest = index.manifest
    assert (manifest.spec.chunk, manifest.spec.chunk_overlap) == (tiny_embedder.text_limit, 63)
    assert (manifest.raw["chunk"], manifest.raw["chunk_overlap"]) == (126, 63)
    index.close()
    model = str(tiny_model)
    for same in ({}, {"chunk": "auto"}, {"chunk": 126}, {"chunk_overlap": 63}):
        Index.open_or_create(tmp_path / "recorded", Settings.of(model=model, **same)).close()
    for other, name in (
        ({"chunk": 64}, "chunk"),
        ({"chunk": "none"}, "chunk"),
        ({"chunk_overlap": 8}, "chunk_overlap"),
    ):
        with pytest.raises(ConfigError, match=f"built with {name} "):
            Index.open_or_create(tmp_path / "recorded", Settings.of(model=model, **other))


def test_impossible_chunk_settings_are_refused_naming_the_problem(tiny_model):
    from searcher.embedder import Embedder

    def embedder(**values):
        return Embedder(EmbeddingSettings(str(tiny_model), precision="fp32", **values), "cpu")

    with pytest.raises(ConfigError, match="chunk 15 is out of range.* 16 to 126 tokens"):
        embedder(chunk=15)
    with pytest.raises(ConfigError, match="chunk 127 is out of range"):
        embedder(chunk=127)
    with pytest.raises(ConfigError, match="chunk_overlap 17 is more than half of a 32-token passage"):
        embedder(chunk=32, chunk_overlap=17)
    assert (embedder(chunk=16).chunk, embedder(chunk=32, chunk_overlap=16).chunk_overlap) == (16, 16)
    assert (embedder(chunk=48).chunk_overlap, embedder(max_length=64).chunk) == (
        24,
        62,
    )  # defaults: min(96, chunk // 2)
    with pytest.raises(ConfigError, match="invalid chunk 'some'"):
        EmbeddingSettings(chunk="some")
    with pytest.raises(ConfigError, match="chunk_overlap must be a number of tokens"):
        EmbeddingSettings(chunk_overlap=-1)
    assert (parse_chunk("none"), parse_chunk("auto"), parse_chunk("128"), parse_chunk(64)) == (0, "auto", 128, 64)
    assert EmbeddingSettings(chunk="none").chunk == 0


# Indexes written before passages (format 1)


def make_format_1(path) -> None:
    """Turn the format-2 index at PATH, built without passages, into what searcher wrote before them."""
    connection = sqlite3.connect(path / DOCS_FILE)
    with connection:
        for table, column in (("vectors", "span_start"), ("vectors", "span_end"), ("documents", "heading")):
            connection.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        connection.execute("UPDATE manifest SET value = '1' WHERE key = 'format'")
        connection.execute("DELETE FROM manifest WHERE key IN ('chunk', 'chunk_overlap')")
    connection.close()


def columns(path) -> set[str]:
    connection = sqlite3.connect(path / DOCS_FILE)
    found = {
        f"{table}.{row[1]}"
        for table in ("vectors", "documents")
        for row in connection.execute(f"PRAGMA table_info({table})")
    }
    connection.close()
    return found


@pytest.fixture
def format_1_index(cut_embedder, tmp_path):
    index = Index.create(tmp_path / "old", embedder=cut_embedder)
    index.add([Record("long", LONG), *SHORTS])
    index.close()
    make_format_1(index.path)
    assert not {"vectors.span_start", "vectors.span_end", "documents.heading"} & columns(index.path)
    return index.path


def test_a_format_1_index_is_read_and_searched_then_upgraded_by_a_write(format_1_index):
    with Index.open(format_1_index) as old:
        assert old.manifest.raw["format"] == 1 and (old.manifest.spec.chunk, old.manifest.spec.chunk_overlap) == (0, 0)
        assert old.check() == []
        assert [owner.span for _, owner, _ in old.stored_vectors()] == [None] * 4
        for mode in ("dense", "keyword", "hybrid"):
            hit = old.search(LONG, k=1, mode=mode)[0]  # in dense, the vector of the text's first 126 tokens
            assert hit.id == "long" and (hit.passage.start, hit.passage.end, hit.passage.text) == (0, len(LONG), LONG)
        assert hit.passage.highlights  # keyword matches are found in the whole text
        assert columns(format_1_index) >= {"vectors.vector"} and "vectors.span_start" not in columns(format_1_index)
        report = old.add([Record("new", OTHER_LONG)])  # loads the model the manifest names: no passages
        assert (report.added, report.truncated, report.split) == (1, 1, 0)
        assert {"vectors.span_start", "vectors.span_end", "documents.heading"} <= columns(format_1_index)
        assert old.manifest.raw["format"] == 2 and old.manifest.spec.chunk == 0
        assert old.check() == []
        [(start, end)] = spans_of(old, "new")
        assert start == 0 and end < len(OTHER_LONG)
        assert spans_of(old, "long") == [None]  # vectors made before keep no span, and read as the whole text
        hit = old.search("garden guide", k=1, mode="keyword")[0]
        assert (hit.id, hit.passage.start, hit.passage.end) == ("long", 0, len(LONG))


def test_repair_of_a_format_1_index_embeds_a_document_without_vectors_again(format_1_index):
    execute(format_1_index, "DELETE FROM vectors WHERE document = (SELECT rowid FROM documents WHERE id = 's1')")
    with Index.open(format_1_index) as old:
        assert any("1 documents have no vector" in problem for problem in old.check())
        assert old.check(repair=True) == []
        assert old.search(SHORTS[0].text, k=1)[0].id == "s1"


def test_a_record_whose_heading_changes_is_embedded_again(tiny_index):
    text = f"Garden guide {LONG}"
    index = tiny_index([Record("doc", text, heading="Garden guide")])
    fresh = tiny_index([Record("doc", text)], name="fresh")

    def vectors(of):
        return [vector.tobytes() for _, _, vector in of.stored_vectors()]

    assert vectors(index) != vectors(fresh)  # the title leads every passage but the first
    report = index.add([Record("doc", text)])
    assert report.unchanged == 0
    assert vectors(index) == vectors(fresh)
