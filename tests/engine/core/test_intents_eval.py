"""The intent detector scored on the corpus's test part, with the targets as floors.

The test part (tests/data/intents/test.tsv) is only ever scored, never tuned on; see
tests/data/intents/README.md. A rule change that costs recall below a floor, or closes
neutral messages, fails here. The cost per message is measured by bench/intents.py.
"""

from __future__ import annotations

from collections import Counter

import pytest

from bench.intents import (
    LABELS,
    RECALL_TARGETS,
    Example,
    Score,
    load,
    part_of,
    report,
    score,
)
from engine.core.intents import EXPECTS, detect

# Recall floors are issue 13's targets: a missed goodbye or cancellation holds a user who
# wanted out. The first score of the test part met them all.
RECALL_FLOORS = RECALL_TARGETS
# Precision floors for the closings, set below the first score (1.000 and 0.985): a
# closing read where there is none ends a conversation nobody asked to end.
PRECISION_FLOORS = {"despedida": 0.95, "cancelacion": 0.95}
# The target is 0.5% (FALSE_CLOSING_TARGET). The first score closed 2 of the 232 neutral
# messages (0.86%), missing it. Rules for closing words named, supposed, quoted or taken
# back, tuned on the dev part and on messages written apart from the corpus, brought the
# second score to 1 of 232 (0.43%). The ceiling holds the level measured, so that any
# further false closing fails.
FALSE_CLOSING_CEILING = 1 / 232


@pytest.fixture(scope="module")
def corpus() -> dict[str, list[Example]]:
    return {part: load(part) for part in ("dev", "test")}


@pytest.fixture(scope="module")
def result(corpus: dict[str, list[Example]]) -> Score:
    return score(lambda text, expects: detect(text, expects=expects), corpus["test"])


def test_corpus_is_large_and_covers_every_label(corpus: dict[str, list[Example]]) -> None:
    assert sum(len(rows) for rows in corpus.values()) >= 1000
    for rows in corpus.values():
        assert {e.label for e in rows} == set(LABELS)
        assert {e.expects for e in rows} <= {None, *EXPECTS}


def test_every_row_sits_on_the_side_its_hash_gives(corpus: dict[str, list[Example]]) -> None:
    misplaced = [(part, e.text) for part, rows in corpus.items() for e in rows
                 if part_of(e.text, e.expects) != part]
    assert misplaced == []


def test_no_message_is_written_twice(corpus: dict[str, list[Example]]) -> None:
    counts = Counter((e.text, e.expects) for rows in corpus.values() for e in rows)
    assert [key for key, n in counts.items() if n > 1] == []


def test_neutral_messages_hold_the_hard_cases(corpus: dict[str, list[Example]]) -> None:
    neutral = [e for rows in corpus.values() for e in rows if e.label == "none"]
    asked_to_cancel = [e for e in neutral if "cancel" in e.text.lower() and "?" in e.text]
    answers = [e for e in neutral if e.expects in ("name", "email")]
    assert len(neutral) >= 300
    assert len(asked_to_cancel) >= 20
    assert len(answers) >= 50


def test_recall_meets_the_floors_on_the_test_part(
    result: Score, capsys: pytest.CaptureFixture[str]
) -> None:
    with capsys.disabled():
        print(f"\nintent detection on the test part ({len(result.pairs)} messages)\n")
        print(report(result))
    below = {label: round(result.recall(label), 3) for label, floor in RECALL_FLOORS.items()
             if result.recall(label) < floor}
    assert below == {}


def test_closings_are_precise_on_the_test_part(result: Score) -> None:
    below = {label: round(result.precision(label), 3)
             for label, floor in PRECISION_FLOORS.items() if result.precision(label) < floor}
    assert below == {}


def test_neutral_messages_rarely_close(result: Score) -> None:
    closed, of = result.false_closings()
    assert closed / of <= FALSE_CLOSING_CEILING, f"{closed} of {of} neutral messages closed"
