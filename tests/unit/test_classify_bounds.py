"""The classifier reads hostile text: a bounded excerpt, with patterns that never retry a run from every start.

Results only, no timings. The rewritten patterns are checked against the ones they replace on small
inputs (where the old ones are fast); the adversarial inputs that made the old ones quadratic run
here at megabyte sizes, so a regression shows as a run that does not finish.
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bench.parse_bench import OLD_PATTERNS
from ralex.classify import READ_HEAD, READ_TAIL, SIGNALS, classify, excerpt

PATTERN = {signal.name: signal.pattern for signal in SIGNALS}
OLD = OLD_PATTERNS  # the patterns as they were before the rewrite (quadratic, or worse, on the inputs below)
MB = 1 << 20

WORDS = st.sampled_from(["convert", "turn", "this", "the", "it", "to", "into", "instead of", "from", "hi", "hi!,",
                         "pls", "can you", "could you please", "quick:", "quickly", "add", "fix", "x:", "a.py",
                         "src/", "-", "/", ".", "py", "json", "()", "`", "#abc", "line 3", "makefile", "_", "é",
                         " ", "  ", "\n", "\t", "\r", "\0", "\u2028", ",", ":", "!", "?"])
TEXTS = st.lists(st.one_of(WORDS, st.text(max_size=3)), max_size=30).map("".join)


@settings(max_examples=1500, deadline=None)
@given(TEXTS)
@example("turn the page, return it to me")
@example("convert this convert this to that")
@example("see /etc/app/pool.go")
@example("--.py and a--b.py")
@example("hi,\ncan you fix the typo")
def test_rewritten_patterns_match_the_same_texts_as_before(text: str):
    for name, old in OLD.items():
        stripped = text.strip()  # the task reaches the classifier stripped; small-edit differs only before that
        assert (PATTERN[name].search(stripped) is None) == (old.search(stripped) is None), name


def test_the_excerpt_is_the_whole_task_or_its_head_and_tail():
    fits = "a" * (READ_HEAD + READ_TAIL)
    assert excerpt(fits) == fits
    long = "h" * READ_HEAD + "m" * 5 * MB + "t" * READ_TAIL
    cut = excerpt(long)
    assert cut.startswith("h" * READ_HEAD)
    assert cut.endswith("t" * READ_TAIL)
    assert "m" not in cut
    assert len(cut) < READ_HEAD + READ_TAIL + 8


FILLER = "lorem ipsum dolor sit amet "


@pytest.mark.parametrize("unit", ["instead of ", "convert this ", "turn it ", "a-", "a/", "hi" + " " * 50,
                                  " " * 64, "!?.,;:" * 8, "\0\r\n\u2028", "<system-reminder>", "'\"`",
                                  "1.1.1.", "from a to ", "should we go "])
def test_ten_megabytes_of_one_repeated_fragment_are_classified_by_their_excerpt(unit: str):
    text = unit * (10 * MB // len(unit))
    verdict = classify(text)
    assert verdict == classify(excerpt(text))
    assert verdict.label in ("cheap", "smart")


def test_a_huge_paste_is_classified_by_the_ask_at_its_start():
    text = "fix the typo in the docstring of a.py\n" + FILLER * 100_000
    assert classify(text).label == "cheap"


def test_a_huge_paste_is_classified_by_the_question_at_its_end():
    text = FILLER * 100_000 + "\nwhy does the worker pool deadlock under load since the upgrade?"
    verdict = classify(text)
    assert verdict.label == "smart"
    assert any(signal.startswith("hard-runtime") for signal in verdict.matched)


def test_nothing_reads_across_the_cut_as_one_phrase():
    # "instead of" split by the cut is two unrelated words, not the cheap signal
    text = "x" * (READ_HEAD - len("instead")) + "instead" + "y" * 10_000 + " of z"
    assert not any(m.startswith("instead-of") for m in classify(text).matched)


def test_old_quadratic_inputs_still_give_the_old_verdicts_at_small_sizes():
    for text, label in [("convert this " * 30 + "to yaml", "cheap"), ("hi" + " " * 30 + "add a flag", "cheap"),
                        ("a-" * 40 + "b.py: fix the typo", "cheap")]:
        assert classify(text).label == label
