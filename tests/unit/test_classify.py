import pytest

from ralex.classify import classify


@pytest.mark.parametrize("text", [
    "fix the typo in hello.py",
    '"fix the typo in hello.py"',
    "'fix the typo in hello.py'",
    '  "rename foo to bar in utils.py"  ',
])
def test_a_small_edit_is_cheap_whether_or_not_it_arrives_in_quotes(text):
    assert classify(text).label == "cheap"


def test_a_quoted_phrase_inside_the_task_is_content_not_the_description():
    # "architecture" is the text to insert, not the work being asked for.
    assert classify('change the heading to "Architecture overview" in README.md').label == "cheap"


def test_a_design_review_in_quotes_stays_smart():
    assert classify('"review the architecture of the payment service for race conditions"').label == "smart"
