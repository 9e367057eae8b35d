"""One truth for spent / left: a tiny budget, a refusal, a raise, as a user walks them. The 402 text, the
agent's toast event, `ralexctl status` and `ralexctl budget` say the same amounts at every step, with the
digits the budget was set with; and a $1 key reaches smart on a design task."""

from __future__ import annotations

import json

import httpx
import pytest

from ralex.budget import suggest_raise, usd
from tests.e2e.conftest import Stack
from tests.integration.conftest import wait_until

pytestmark = pytest.mark.e2e


def chat(stack: Stack, key: str, text: str, model: str = "auto") -> httpx.Response:
    return httpx.post(f"{stack.proxy}/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 4000},
                      timeout=60)


def budget(stack: Stack) -> dict[str, object]:
    return httpx.get(f"{stack.proxy}/ralex/budget", headers={"Authorization": f"Bearer {stack.master}"},
                     timeout=10).json()


def test_a_tiny_budget_a_refusal_and_a_raise_are_told_the_same_everywhere(stack: Stack):
    spent = wait_until(lambda: (b := budget(stack))["reserved"] == 0 and b, 30, what="no request in flight")["spent"]
    tiny = round(float(spent) + 0.00002, 6)  # less than any request's smallest worst case
    set_tiny = stack.ralexctl("budget", "set", f"{tiny}")
    assert set_tiny.returncode == 0, set_tiny.stderr
    assert usd(tiny) in set_tiny.stdout
    assert "alert thresholds: " in set_tiny.stdout

    refused = chat(stack, stack.env["RALEX_AGENT_KEY"], "design the plugin system's architecture for extensions")
    assert refused.status_code == 402, refused.text
    message = refused.json()["error"]["message"]
    left = usd(max(0.0, tiny - float(spent)))
    assert f"Daily budget {usd(tiny)} exhausted ({usd(float(spent))} spent; {left} left, this request needs up to $" \
        in message, message
    assert message.endswith(f"Raise it with: ralexctl budget set {suggest_raise(tiny)}")

    agent = {"Authorization": f"Bearer {stack.env['RALEX_AGENT_KEY']}"}
    events = httpx.get(f"{stack.proxy}/ralex/status", headers=agent, timeout=10).json()["events"]
    assert any(e["kind"] == "refused" and message.startswith(e["text"][:250]) for e in events), events  # = the 402

    status = json.loads(stack.ralexctl("status", "--json").stdout)
    told = httpx.get(f"{stack.proxy}/ralex/status", headers=agent, timeout=10).json()["summary"]
    assert told.startswith(f"{usd(float(spent))} of {usd(tiny)} spent ("), told  # the agent's TUI summary
    assert told.split(" (in ")[0] == status["budget"]["summary"].split(" (in ")[0]
    assert status["budget"]["limit"] == pytest.approx(tiny)
    assert status["budget"]["spent"] == pytest.approx(float(spent))
    shown = stack.ralexctl("status").stdout
    assert f"{usd(float(spent))} of {usd(tiny)}" in shown or usd(tiny) in shown, shown

    raised = stack.ralexctl("budget", "set", "5")
    assert raised.returncode == 0, raised.stderr
    after = json.loads(stack.ralexctl("status", "--json").stdout)
    assert after["budget"]["limit"] == 5
    assert after["budget"]["tier"] == "full"  # now's tier, whatever was crossed earlier today
    assert chat(stack, stack.env["RALEX_AGENT_KEY"], "add a docstring to utils.py").status_code == 200


def test_a_one_dollar_key_reaches_smart_on_a_design_task(stack: Stack):
    added = stack.ralexctl("keys", "add", "designer", "--budget", "1")
    assert added.returncode == 0, added.stderr
    assert "smart while more than $0.40 of it is left" in added.stdout
    key = added.stdout.strip().splitlines()[-1]
    try:
        answer = chat(stack, key, "design the plugin system's architecture for third-party extensions")
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-ralex-route"] == "smart", answer.headers.get("x-ralex-reason")
    finally:
        stack.ralexctl("keys", "revoke", "designer")
