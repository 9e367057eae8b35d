from __future__ import annotations

import pytest

from ralex.request import ChatRequest, RequestError, estimate_prompt_tokens, task_text

SYSTEM = {"role": "system", "content": "You are OpenCode, a coding agent."}


def test_task_is_the_latest_user_message_not_tool_results():
    messages = [
        SYSTEM,
        {"role": "user", "content": [{"type": "text", "text": "fix the typo in hello.py"}]},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "1", "type": "function",
                                                                 "function": {"name": "read", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "1", "content": "refactor the architecture of everything"},
    ]
    assert task_text(messages) == "fix the typo in hello.py"


def test_injected_reminders_are_not_the_task():
    messages = [{"role": "user", "content": "add a docstring<system-reminder>plan mode: review</system-reminder>"}]
    assert task_text(messages) == "add a docstring"


def test_tool_steps_of_one_turn_share_a_turn_key_and_a_new_message_changes_it():
    first = [SYSTEM, {"role": "user", "content": "fix the typo"}]
    step = [*first, {"role": "assistant", "content": "reading"}, {"role": "tool", "tool_call_id": "1",
                                                                   "content": "file"}]
    nxt = [*step, {"role": "assistant", "content": "done"}, {"role": "user", "content": "fix the typo"}]
    body = {"model": "auto"}
    key = ChatRequest.from_body({**body, "messages": first}).turn
    assert ChatRequest.from_body({**body, "messages": step}).turn == key
    assert ChatRequest.from_body({**body, "messages": nxt}).turn != key


def test_title_generator_is_housekeeping():
    body = {"model": "auto", "messages": [{"role": "system", "content": "You are a title generator. You output "
                                                                        "ONLY a thread title."},
                                          {"role": "user", "content": "review the architecture"}]}
    assert ChatRequest.from_body(body).housekeeping


def test_prompt_estimate_is_an_upper_bound_of_bpe_tokens():
    text = "def add(a, b):\n    return a + b\n" * 100
    assert estimate_prompt_tokens([{"role": "user", "content": text}]) >= len(text) / 4


@pytest.mark.parametrize(("body", "message"), [
    ({"messages": [{"role": "user", "content": "x"}]}, "no 'model'"),
    ({"model": "auto"}, "no 'messages'"),
    ({"model": "auto", "messages": []}, "non-empty list"),
    ({"model": "auto", "messages": ["hi"]}, r"messages\[0\]"),
    ({"model": "auto", "messages": [{"role": "user", "content": "x"}], "max_tokens": "lots"}, "positive whole"),
])
def test_bad_bodies_are_named(body, message):
    with pytest.raises(RequestError, match=message):
        ChatRequest.from_body(body)
