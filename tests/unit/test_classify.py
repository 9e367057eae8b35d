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


@pytest.mark.parametrize("text", [
    "just switch us from redux to zustand",
    "convert the whole project from javascript to typescript",
    "upgrade from Django 3.2 to 5.0, we have custom middleware",
    "fix the race in the session cache",
    "what's causing the hydration mismatch on every page?",
    "simple question: should retries live in the http client or in each caller?",
])
def test_big_or_unclear_work_is_smart_however_briefly_it_is_asked(text):
    assert classify(text).label == "smart"


@pytest.mark.parametrize("text", [
    "in the helm chart set resources.limits.memory to 512Mi",
    "in retry.py change the default backoff from 1.0 to 2.0 seconds",
    "bash: how to loop over all .csv files in a dir",
    "COPY vs ADD in a dockerfile, what's the difference",
    "json to yaml pls",
])
def test_literal_settings_and_lookups_are_cheap(text):
    assert classify(text).label == "cheap"
