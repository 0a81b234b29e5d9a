"""Intent detection scored on the corpus: precision, recall, F1, confusion, cost per message.

The corpus is tests/data/intents/ (see its README). The test part is only ever scored;
rules are tuned against the dev part, whose misses `--errors` lists.

    python -m bench.intents                  # test part; appends a section to RESULTS.md
    python -m bench.intents --part dev --errors --no-write   # while tuning rules

Cost per message: the detector keeps the reading of each word it has seen, so the first
pass of a fresh detector over the part (every word new to it) is reported apart from the
median of the passes after it. In the same run, two baselines are timed on the same
messages: the detector as it was before the corpus existed (engine/core/intents.py at
BASELINE_COMMIT, read from git; it keeps no cache), and a floor that only casefolds.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import re
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "intents"
LABELS = ("saludo", "afirmacion", "negacion", "prueba", "despedida", "cancelacion", "none")
CLOSING = ("despedida", "cancelacion")
# Issue 13's targets on the test part.
RECALL_TARGETS = {"despedida": 0.95, "cancelacion": 0.95, "saludo": 0.90,
                  "afirmacion": 0.90, "negacion": 0.90, "prueba": 0.90}
FALSE_CLOSING_TARGET = 0.005
MICROSECONDS_TARGET = 50.0
# The commit that added the corpus, before any change to the detector.
BASELINE_COMMIT = "0d6613b"

Detect = Callable[[str, "str | None"], "str | None"]


@dataclass(frozen=True)
class Example:
    text: str
    label: str
    expects: str | None


def part_of(text: str, expects: str | None) -> str:
    """The side of the split a message belongs to, fixed by a hash of its text."""
    digest = hashlib.sha256(f"{text}\t{expects or ''}".encode()).digest()
    return "test" if digest[0] < 128 else "dev"


def load(part: str) -> list[Example]:
    """The rows of dev.tsv or test.tsv."""
    with open(CORPUS / f"{part}.tsv", encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [Example(r["text"], r["label"], r["expects"] or None) for r in reader]


@dataclass
class Score:
    """Per-label counts over one part of the corpus."""

    pairs: list[tuple[Example, str]]
    confusion: dict[tuple[str, str], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for example, got in self.pairs:
            key = (example.label, got)
            self.confusion[key] = self.confusion.get(key, 0) + 1

    def support(self, label: str) -> int:
        return sum(n for (want, _), n in self.confusion.items() if want == label)

    def predicted(self, label: str) -> int:
        return sum(n for (_, got), n in self.confusion.items() if got == label)

    def precision(self, label: str) -> float:
        predicted = self.predicted(label)
        return self.confusion.get((label, label), 0) / predicted if predicted else 1.0

    def recall(self, label: str) -> float:
        support = self.support(label)
        return self.confusion.get((label, label), 0) / support if support else 1.0

    def f1(self, label: str) -> float:
        p = self.precision(label)
        r = self.recall(label)
        return 2 * p * r / (p + r) if p + r else 0.0

    def false_closings(self, labels: Sequence[str] = ("none",)) -> tuple[int, int]:
        """(closed, of): messages with these labels that were read as a closing."""
        rows = [(e, got) for e, got in self.pairs if e.label in labels]
        return sum(1 for _, got in rows if got in CLOSING), len(rows)

    def errors(self) -> list[tuple[Example, str]]:
        return [(e, got) for e, got in self.pairs if got != e.label]


def score(detect: Detect, examples: Sequence[Example]) -> Score:
    """Run `detect` over the examples; None counts as the label "none"."""
    return Score([(e, detect(e.text, e.expects) or "none") for e in examples])


def table(result: Score) -> list[list[str]]:
    """Rows of label, support, precision, recall, F1."""
    return [[label, str(result.support(label)), f"{result.precision(label):.3f}",
             f"{result.recall(label):.3f}", f"{result.f1(label):.3f}"] for label in LABELS]


def confusion_rows(result: Score) -> list[list[str]]:
    """One row per true label, one column per detected label."""
    return [[want, *(str(result.confusion.get((want, got), 0)) for got in LABELS)]
            for want in LABELS]


def render(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def report(result: Score) -> str:
    """The per-label table, the false-closing rates and the confusion matrix."""
    closed, of = result.false_closings()
    stricter, of_all = result.false_closings(("none", "saludo", "afirmacion", "negacion",
                                              "prueba"))
    return "\n\n".join([
        render(["label", "n", "precision", "recall", "F1"], table(result)),
        f"Neutral messages (label none) read as a goodbye or a cancellation: {closed} of {of} "
        f"({100 * closed / of:.2f}%). Any message that is not a closing read as one: "
        f"{stricter} of {of_all} ({100 * stricter / of_all:.2f}%).",
        "Confusion (rows: label in the corpus; columns: what the detector said):\n\n"
        + render(["label \\ detected", *LABELS], confusion_rows(result)),
    ])


# -- typos -----------------------------------------------------------------------------

_LETTERS = "abcdefghijklmnopqrstuvwxyz"
_WORD = re.compile(r"[^\W\d_]{5,}")


def with_typo(text: str, rng: random.Random) -> str | None:
    """The text with one edit (a letter dropped, added, changed or two swapped) at a
    random place of its longest word of five letters or more; None if it has none."""
    words = _WORD.findall(text)
    if not words:
        return None
    word = max(words, key=len)
    i = rng.randrange(len(word) - 1)
    kind = rng.choice(("drop", "add", "change", "swap"))
    letter = rng.choice(_LETTERS)
    typo = {"drop": word[:i] + word[i + 1:], "add": word[:i] + letter + word[i:],
            "change": word[:i] + letter + word[i + 1:],
            "swap": word[:i] + word[i + 1] + word[i] + word[i + 2:]}[kind]
    return text.replace(word, typo, 1)


def typo_rows(detectors: Sequence[tuple[str, Detect]], examples: Sequence[Example]
              ) -> list[list[str]]:
    """Per detector: readings a typo leaves right, for intents and for neutral messages,
    and the neutral messages a typo made close.

    Only messages every detector reads right without the typo count, so each figure is
    the share of right readings a typo leaves standing, on the same messages with the
    same typos for all.
    """
    rng = random.Random(13)
    typed = [(e, with_typo(e.text, rng)) for e in examples]
    right = [(e, t) for e, t in typed if t is not None and all(
        (detect(e.text, e.expects) or "none") == e.label for _, detect in detectors)]
    rows = []
    for name, detect in detectors:
        after = [(e, detect(t, e.expects) or "none") for e, t in right]
        rows.append([name, _share(after, lambda e: e.label != "none"),
                     _share(after, lambda e: e.label == "none"),
                     str(sum(1 for e, got in after if e.label == "none" and got in CLOSING))])
    return rows


def _share(after: Sequence[tuple[Example, str]], which: Callable[[Example], bool]) -> str:
    rows = [(e, got) for e, got in after if which(e)]
    kept = sum(1 for e, got in rows if got == e.label)
    return f"{kept} of {len(rows)} ({100 * kept / len(rows):.1f}%)"


# -- cost per message ------------------------------------------------------------------


def microseconds(detect: Detect, examples: Sequence[Example], rounds: int) -> list[float]:
    """Per-round mean cost of one call, in microseconds."""
    texts = [(e.text, e.expects) for e in examples]
    results = []
    for _ in range(rounds):
        started = time.perf_counter()
        for text, expects in texts:
            detect(text, expects)
        results.append(1e6 * (time.perf_counter() - started) / len(texts))
    return results


def current(fresh: bool = False) -> Detect:
    """The detector as the engine builds it; `fresh` gives one that has seen no word."""
    from engine.core.intents import Intents, detect
    from engine.core.phrasebook import Phrasebook

    if not fresh:
        return lambda text, expects: detect(text, expects=expects)
    detector = Intents()
    detector._book = Phrasebook()  # not the shared book, whose word cache is warm
    return lambda text, expects: detector.detect(text, expects=expects)


def baseline() -> Detect | None:
    """The detector at BASELINE_COMMIT (it takes no `expects`), or None outside a git tree."""
    try:
        source = subprocess.run(
            ["git", "show", f"{BASELINE_COMMIT}:engine/core/intents.py"], cwd=ROOT,
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    module = types.ModuleType("tertulia_intents_baseline")
    sys.modules[module.__name__] = module  # dataclass-free, but annotations resolve here
    exec(compile(source, f"{BASELINE_COMMIT}:engine/core/intents.py", "exec"), module.__dict__)
    old = module.detect
    return lambda text, _expects: old(text)  # type: ignore[no-any-return]


def floor(text: str, _expects: str | None) -> str | None:
    text.casefold()
    return None


# -- command line ----------------------------------------------------------------------


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("test", "dev"), default="test")
    parser.add_argument("--errors", action="store_true",
                        help="list every miss (dev part only: the test part is never tuned on)")
    parser.add_argument("--rounds", type=int, default=7, help="timed passes over the part")
    parser.add_argument("--no-write", action="store_true",
                        help="print the results but do not append to bench/RESULTS.md")
    parser.add_argument("--quick", action="store_true", help="three timed passes")
    parser.add_argument("--keep", action="store_true", help="accepted for bench.run_all; "
                        "this benchmark leaves nothing behind")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = 3
    if args.errors and args.part != "dev":
        parser.error("--errors lists misses of the dev part only")
    return args


def _timing_rows(examples: Sequence[Example], rounds: int) -> list[list[str]]:
    """Median and best µs per message; the detectors take turns in each round, so a
    busy host slows them alike."""
    contenders: list[tuple[str, Detect]] = [("this detector, later passes", current())]
    old = baseline()
    if old is not None:
        contenders.append((f"the detector at {BASELINE_COMMIT} (keeps no cache)", old))
    contenders.append(("floor: str.casefold only", floor))
    passes: dict[str, list[float]] = {name: [] for name, _ in contenders}
    cold: list[float] = []
    for _ in range(rounds):
        cold += microseconds(current(fresh=True), examples, 1)
        for name, detect in contenders:
            passes[name] += microseconds(detect, examples, 1)
    now = statistics.median(passes[contenders[0][0]])
    rows = [_timing_row("this detector, first pass (every word new)", cold, now)]
    rows += [_timing_row(name, passes[name], now) for name, _ in contenders]
    return rows


def _timing_row(name: str, values: list[float], reference: float) -> list[str]:
    middle = statistics.median(values)
    return [name, f"{middle:.2f}", f"{min(values):.2f}", f"{middle / reference:.3f}"]


def targets(result: Score, cost: float) -> list[list[str]]:
    """Rows of target, goal, measured, met."""
    rows = [[f"recall {label}", f">= {goal:.2f}", f"{result.recall(label):.3f}",
             _yes(result.recall(label) >= goal)] for label, goal in RECALL_TARGETS.items()]
    closed, of = result.false_closings()
    rows.append(["neutral read as a closing", f"<= {100 * FALSE_CLOSING_TARGET:.1f}%",
                 f"{closed} of {of} ({100 * closed / of:.2f}%)",
                 _yes(closed / of <= FALSE_CLOSING_TARGET)])
    rows.append(["cost per message (later passes)", f"< {MICROSECONDS_TARGET:.0f} µs",
                 f"{cost:.1f} µs", _yes(cost < MICROSECONDS_TARGET)])
    return rows


def _yes(met: bool) -> str:
    return "yes" if met else "**no**"


def _uname() -> str:
    try:
        return subprocess.run(["uname", "-a"], capture_output=True, text=True, check=True,
                              timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def main(argv: Sequence[str] | None = None) -> None:
    args = _args(argv)
    examples = load(args.part)
    result = score(current(), examples)
    if args.errors:
        for example, got in result.errors():
            print(f"{example.label:<12} -> {got:<12} {example.expects or '':<6} {example.text}")
    from bench.common import Report

    section = Report(f"Intent detection on the {args.part} part (bench/intents.py)",
                     quick=args.quick)
    section.settings({"part": f"tests/data/intents/{args.part}.tsv", "messages": len(examples),
                      "timed passes": args.rounds})
    section.text(f"`uname -a`: {_uname()}")
    section.text(report(result))
    old = baseline()
    if old is not None:
        before = score(old, examples)
        section.text(f"The detector at {BASELINE_COMMIT}, on the same part:\n\n"
                     + render(["label", "n", "precision", "recall", "F1"], table(before))
                     + "\n\n" + "Neutral read as a closing: {} of {}.".format(
                         *before.false_closings()))
    detectors = [("this detector", current())]
    if old is not None:
        detectors.append((f"the detector at {BASELINE_COMMIT}", old))
    section.text("**Typos**: the messages every detector below reads right, each with one "
                 "random edit (a letter dropped, added, changed, or two swapped; seed 13) in "
                 "its longest word of five letters or more\n\n" + render(
                     ["detector", "intents still read right", "neutral still read none",
                      "neutral the typo made close"],
                     typo_rows(detectors, examples)))
    timing = _timing_rows(examples, args.rounds)
    section.text("**Cost per message** (one pass calls a detector once per message of the "
                 f"part, in this process; {args.rounds} passes each, median and best)\n\n"
                 + render(["detector", "µs per message (median)", "best pass",
                           "median, ratio to this detector"], timing))
    section.text("**Targets (issue 13)**\n\n" + render(
        ["target", "goal", "measured", "met"], targets(result, float(timing[1][1]))))
    section.write(enabled=not args.no_write and args.part == "test")


if __name__ == "__main__":
    main()
