"""Long texts as passages: windows of tokens that overlap, ending where they can at a paragraph or sentence.

A model reads a few hundred tokens; a help page holds thousands. `windows` cuts a text's tokens into
windows of a given length that share OVERLAP tokens with the previous one, so that a sentence cut at one
window's end is whole in the next. A window ends at the last paragraph break in its second half, else the
last sentence end there, else at its full length; the next one starts at a sentence start where the overlap
holds one. Everything here works on token positions and character offsets only: the tokenizer is the
embedder's.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

PARAGRAPH = re.compile(r"\n[ \t]*\n\s*")
# After a sentence's closing punctuation (and any closing quote or bracket), or at a line break: a list item
# or a heading line ends there too.
SENTENCE = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+|\n\s*")
# A window ends at a break only past this share of its length: ending earlier would spend a vector on little.
EARLIEST_BREAK = 0.5
# Windows a text is split into, at most; text past them is cut (and counted), as a text too long is when not
# split: a 1,000-page manual is many documents, not one.
MAX_PASSAGES = 1000


def breaks(text: str, starts: Sequence[int], pattern: re.Pattern[str]) -> list[int]:
    """Token positions, ascending, at which a match of PATTERN in TEXT ends: tokens that begin a paragraph or
    sentence. STARTS are the tokens' start offsets in TEXT, ascending."""
    found = {bisect_left(starts, match.end()) for match in pattern.finditer(text)}
    return sorted(position for position in found if 0 < position < len(starts))


def windows(
    count: int, size: int, overlap: int, paragraphs: Sequence[int] = (), sentences: Sequence[int] = ()
) -> list[tuple[int, int]]:
    """[first, end) token ranges covering COUNT tokens, each at most SIZE long, neighbours sharing about OVERLAP.

    PARAGRAPHS and SENTENCES are the ascending token positions at which one begins (see `breaks`).
    """
    if size < 1 or not 0 <= overlap < size:
        raise ValueError(f"a window of {size} tokens cannot overlap the previous one by {overlap}")
    ranges = []
    first = 0
    while count - first > size:
        last = first + size
        earliest = first + int(size * EARLIEST_BREAK) + 1
        end = _latest(paragraphs, earliest, last) or _latest(sentences, earliest, last) or last
        ranges.append((first, end))
        resume = max(end - overlap, first + 1)
        first = _earliest(sentences, resume, end) or resume
    ranges.append((first, count))
    return ranges


def _latest(positions: Sequence[int], low: int, high: int) -> int | None:
    """The largest of the ascending POSITIONS within [LOW, HIGH], if any."""
    index = bisect_right(positions, high) - 1
    return positions[index] if index >= 0 and positions[index] >= low else None


def _earliest(positions: Sequence[int], low: int, high: int) -> int | None:
    """The smallest of the ascending POSITIONS within [LOW, HIGH), if any."""
    index = bisect_left(positions, low)
    return positions[index] if index < len(positions) and positions[index] < high else None
