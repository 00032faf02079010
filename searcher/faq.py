"""FAQ entries: a question, its answer and other wordings of the question. The one module that knows them.

Indexing embeds a FAQ entry's question and answer as its text and each alternative wording on its own, and
keeps question and answer as fields; a hit then shows the wording that matched and returns the answer.
"""

from __future__ import annotations

import json
from typing import Any

QUESTION = "question"
ANSWER = "answer"
ALTERNATIVES = "alternatives"
# The fields a FAQ entry's text is taken from, most complete first.
TEXT_FIELD_CHOICES = ((QUESTION, ANSWER), (QUESTION,), (ANSWER,))
# The fields a hit shows as text, a FAQ entry's or any other document's that has them.
SHOWN_FIELDS = (QUESTION, ANSWER)


def is_entry(text_keys: list[str]) -> bool:
    """Whether a row whose text comes from TEXT_KEYS is a FAQ entry."""
    return QUESTION in text_keys


def entry_fields(row: dict[str, Any], id_key: str | None) -> dict[str, Any]:
    """The fields a FAQ entry keeps: question and answer among them, the alternative wordings not."""
    return {key: value for key, value in row.items() if key not in (id_key, ALTERNATIVES)}


def matched_question(fields: dict[str, Any], matched: str | None) -> str | None:
    """The wording of a FAQ entry's question that matched (MATCHED, else its question); None for other documents."""
    return matched or _text(fields.get(QUESTION))


def answer(fields: dict[str, Any]) -> str | None:
    return _text(fields.get(ANSWER))


def _text(value: Any) -> str | None:
    # Sources store text here, but a Record given to the library or the HTTP API, or an index written before
    # searcher checked, may hold any JSON value.
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)
