"""A key per client, a sub-budget per key: the real proxy, real Postgres, the fake OpenRouter.

Each test makes keys of its own (names with a random suffix: the proxy and its ledger are shared).
"""

from __future__ import annotations

import json
import signal
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests import results
from tests.integration.conftest import BUDGET_TZ, Fake, Pg, Proxy, start_proxy, wait_until

pytestmark = pytest.mark.integration
AGENT = {"Authorization": "Bearer sk-ralex-test-agent"}
HI = [{"role": "user", "content": "fix the typo in hello.py"}]


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def add_key(proxy: Proxy, name: str, budget: float | None = None) -> str:
    response = proxy.client.post("/ralex/keys", json={"name": name, "budget": budget})
    assert response.status_code == 200, response.text
    created = response.json()
    assert created["name"] == name
    assert created["key"].startswith("sk-ralex-")
    return str(created["key"])


def key_chat(proxy: Proxy, key: str, text: str = "fix the typo in hello.py", **body: Any) -> httpx.Response:
    return httpx.post(f"{proxy.url}v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, timeout=60,
                      json={"model": body.pop("model", "cheap"), "messages": [{"role": "user", "content": text}],
                            **body})


def key_view(proxy: Proxy, name: str) -> dict[str, Any]:
    keys = proxy.client.get("/ralex/keys").json()["keys"]
    return next(k for k in keys if k["name"] == name)


def test_a_key_is_shown_once_stored_hashed_and_its_spend_attributed(live: Proxy, upstream: Fake):
    name = unique("laptop")
    key = add_key(live, name, 2)
    served = key_chat(live, key)
    assert served.status_code == 200, served.text
    assert served.headers["x-ralex-key"] == name
    row = live.row(served)
    assert row["key_name"] == name
    assert float(row["cost_usd"]) == pytest.approx(upstream.requests()[0]["billed_cost"])
    listed = live.client.get("/ralex/keys").json()
    assert key not in json.dumps(listed)  # the plain key is never shown again
    view = key_view(live, name)
    assert (view["daily_budget"], view["revoked_at"]) == (2.0, None)
    assert view["spent_today"] == pytest.approx(float(row["cost_usd"]))
    assert name in [k["name"] for k in live.budget()["keys"]]  # ralexctl status's one line per key
    with psycopg.connect(live.dsn) as conn:  # the ledger holds a hash, not the key
        [(key_hash,)] = conn.execute("SELECT key_hash FROM client_keys WHERE name = %s", (name,)).fetchall()
    assert key not in key_hash
    assert len(key_hash) == 64
    # the master key's own requests are the operator's, the agent key's the agent's
    assert live.row(live.chat("fix the typo"))["key_name"] == "operator"
    agent = httpx.post(f"{live.url}v1/chat/completions", headers=AGENT, json={"model": "cheap", "messages": HI})
    assert live.row(agent)["key_name"] == "agent"
    spend = live.client.get("/ralex/spend", params={"days": 1, "by": "key"}).json()
    by_key = {r["key"]: r for r in spend["rows"]}
    assert by_key[name]["spent"] == pytest.approx(float(row["cost_usd"]))
    assert {"operator", "agent", name} <= set(by_key)


def test_a_fallback_and_a_cut_stream_are_charged_to_the_key(live: Proxy, upstream: Fake):
    name = unique("stream")
    key = add_key(live, name, 3)  # above $2 left on the key and the day: smart may be the fallback
    upstream.faults({"kind": "status", "status": 503, "model": "google/gemini-2.5-flash-lite"})
    fell_back = key_chat(live, key, "add a docstring", max_tokens=300)
    assert fell_back.status_code == 200, fell_back.text
    row = live.row(fell_back)
    assert (row["key_name"], row["alias_routed"], row["fallback"]) == (name, "smart", True)
    upstream.faults({"kind": "slow", "chunk_delay": 0.5, "times": None})
    with httpx.stream("POST", f"{live.url}v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                      json={"model": "cheap", "stream": True, "messages": HI}, timeout=30) as cut:
        request_id = cut.headers["x-ralex-request-id"]
        next(cut.iter_lines())  # one line, then the client leaves
    [cancelled] = wait_until(lambda: live.ledger("request_id = %s", (request_id,)), 30, what="the cut stream's row")
    assert (cancelled["key_name"], cancelled["status"]) == (name, "cancelled")
    wait_until(lambda: live.budget()["in_flight"] == 0, 30, what="every hold settled")
    charged = sum(float(r["cost_usd"]) for r in live.ledger("key_name = %s", (name,)))
    assert key_view(live, name)["spent_today"] == pytest.approx(charged, abs=1e-8)


def test_a_revoked_key_gets_401_naming_it_and_an_unknown_key_401(live: Proxy, upstream: Fake):
    name = unique("ci")
    key = add_key(live, name)
    assert key_chat(live, key).status_code == 200
    revoked = live.client.delete(f"/ralex/keys/{name}")
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"]
    refused = key_chat(live, key)
    assert refused.status_code == 401
    assert f"key {name} was revoked" in refused.json()["error"]["message"]
    unknown = key_chat(live, "sk-ralex-" + "x" * 43)
    assert unknown.status_code == 401
    assert "ralexctl keys add" in unknown.json()["error"]["message"]
    assert len(upstream.requests()) == 1
    again = live.client.post("/ralex/keys", json={"name": name})
    assert again.status_code == 400
    assert "already exists (revoked" in again.json()["detail"]


def test_a_key_over_its_sub_budget_gets_402_naming_it_and_the_fix_then_a_raise_applies_live(live: Proxy,
                                                                                          upstream: Fake):
    name = unique("aider")
    key = add_key(live, name, 0)
    refused = key_chat(live, key)
    assert refused.status_code == 402
    message = refused.json()["error"]["message"]
    assert message.startswith(f"Key {name}: daily sub-budget $0.00 exhausted ($0.00 spent; $0.00 left, this "
                              "request needs up to $")
    assert f"resets at 00:00 {BUDGET_TZ} (in " in message
    assert message.endswith(f"Raise it with: ralexctl keys budget {name} 2")
    assert refused.headers["x-ralex-key"] == name
    assert upstream.requests() == []
    rows = wait_until(lambda: live.ledger("key_name = %s AND status = 'refused'", (name,)))
    assert float(rows[0]["cost_usd"]) == 0
    # the day itself is fine: other clients are served, and the refusal is no toast for the agent
    assert httpx.post(f"{live.url}v1/chat/completions", headers=AGENT,
                      json={"model": "cheap", "messages": HI}).status_code == 200
    status = httpx.get(f"{live.url}ralex/status", headers=AGENT, params={"since": 0}).json()
    assert not [e for e in status["events"] if name in e["text"]]
    raised = live.client.put(f"/ralex/keys/{name}", json={"budget": 2})
    assert raised.status_code == 200, raised.text
    served = key_chat(live, key, "design a plugin system for the importer", model="auto")
    assert served.status_code == 200, served.text
    # all of a $2 key left: its tiers are the day's shape scaled to it (smart above $0.80 left)
    assert served.headers["x-ralex-tier"] == "full"
    assert served.headers["x-ralex-route"] == "smart"
    assert float(served.headers["x-ralex-budget-remaining"]) <= 2.0


def test_a_client_key_may_call_the_model_routes_only(live: Proxy, upstream: Fake):
    name = unique("codex")
    key = add_key(live, name)
    auth = {"Authorization": f"Bearer {key}"}
    base = live.url.rstrip("/")
    assert httpx.get(f"{base}/v1/models", headers=auth).status_code == 200
    own = httpx.get(f"{base}/ralex/status", headers=auth)  # its own day only: a joined agent's toasts read it
    assert own.status_code == 200
    assert own.json()["summary"].startswith(f"Key {name}: $0.00 spent today (no sub-budget: the team's daily budget)")
    assert "events" not in own.json()
    for method, path in (("GET", "/ralex/budget"), ("GET", "/ralex/keys"), ("POST", "/ralex/keys"),
                         ("PUT", f"/ralex/keys/{name}"), ("DELETE", f"/ralex/keys/{name}"), ("PUT", "/ralex/budget"),
                         ("GET", "/ralex/spend"), ("POST", "/ralex/route")):
        response = httpx.request(method, f"{base}{path}", headers=auth, json={"name": "mine", "budget": 100})
        assert response.status_code == 401, (method, path, response.text)
        agent = httpx.request(method, f"{base}{path}", headers=AGENT, json={"name": "mine", "budget": 100})
        assert agent.status_code == 401, (method, path)
    assert httpx.get(f"{base}/metrics", headers=auth).status_code == 403
    assert httpx.get(f"{base}/v1/model/info", headers=auth).status_code == 403
    for path in ("/key/generate", "/openrouter/v1/chat/completions", "/openapi.json", "/v1/messages/x"):
        assert httpx.post(f"{base}{path}", headers=auth, json={}).status_code == 404, path
    transport = httpx.HTTPTransport(uds=str(live.runtime / "agent.sock"))
    with httpx.Client(transport=transport, base_url="http://agent", headers=auth) as socket_client:
        assert socket_client.get("/ralex/keys").status_code == 404
    assert key_view(live, name)["daily_budget"] is None  # nothing above changed the key
    assert upstream.requests() == []


@pytest.mark.parametrize(("method", "path", "body", "status", "text"), [
    ("POST", "/ralex/keys", {"name": "Bad Name"}, 400, "lowercase letters, digits and '-'"),
    ("POST", "/ralex/keys", {"name": "operator"}, 400, "reserved"),
    ("POST", "/ralex/keys", {"name": "ok-name", "budget": "lots"}, 400, "not a number"),
    ("POST", "/ralex/keys", {"name": "ok-name", "owner": "me"}, 400, "unknown field 'owner'"),
    ("POST", "/ralex/keys", ["ok-name"], 400, "JSON object"),
    ("PUT", "/ralex/keys/nobody-here", {"budget": 1}, 404, "no key named 'nobody-here'"),
    ("PUT", "/ralex/keys/nobody-here", {}, 400, '{"budget": null}'),
    ("PUT", "/ralex/keys/NOPE", {"budget": 1}, 400, "lowercase letters"),
    ("DELETE", "/ralex/keys/nobody-here", None, 404, "ralexctl keys list"),
])
def test_bad_key_requests_are_4xx_naming_the_fix(live: Proxy, method: str, path: str, body: Any, status: int,
                                                 text: str):
    response = live.client.request(method, path, json=body)
    assert response.status_code == status, response.text
    assert text in response.json()["detail"]


def test_three_keys_fifty_concurrent_requests_no_key_over_its_sub_budget_nor_the_day(each_book: Proxy,
                                                                                      upstream: Fake):
    """Sub-budgets $0.001, $0.0012, $0.01 (sum $0.0122) under $0.005 left today, every request held at
    about $0.0004: the first two keys run into their own sub-budgets (2 and 3 holds: reached whatever
    order the 50 requests arrive in, long before the day's ~13), the third into the day's. With the book
    in memory and shared through Postgres."""
    live = each_book
    budgets = {unique("conc-a"): 0.001, unique("conc-b"): 0.0012, unique("conc-c"): 0.01}
    keys = {name: add_key(live, name, budget) for name, budget in budgets.items()}
    live.set_remaining(0.005)
    before = live.budget()
    upstream.faults({"kind": "slow", "chunk_delay": 0.3, "times": None})  # every admitted request in flight
    prompt = "add a docstring to the Cache class " + "x" * 3_000
    names = [list(keys)[i % 3] for i in range(50)]

    with ThreadPoolExecutor(50) as pool:
        responses = list(pool.map(lambda n: (n, key_chat(live, keys[n], prompt, max_tokens=1500)), names))
    assert {r.status_code for _, r in responses} <= {200, 402}, [r.text for _, r in responses if r.status_code
                                                                 not in (200, 402)]
    wait_until(lambda: live.budget()["in_flight"] == 0 and live.budget()["ledger"]["pending"] == 0, 60,
               what="every request settled and written")
    served: dict[str, int] = defaultdict(int)
    refused_by_key: dict[str, int] = defaultdict(int)
    refused_by_day: dict[str, int] = defaultdict(int)
    for name, response in responses:
        if response.status_code == 200:
            served[name] += 1
            continue
        message = response.json()["error"]["message"]
        assert message.startswith((f"Key {name}: daily sub-budget", "Daily budget")), message
        (refused_by_key if message.startswith("Key") else refused_by_day)[name] += 1
    rows = {name: live.ledger("key_name = %s AND status <> 'refused'", (name,)) for name in keys}
    spent = {name: sum(float(r["cost_usd"]) for r in rows[name]) for name in keys}
    by_generation = {r["generation_id"]: name for name in keys for r in rows[name]}
    billed: dict[str, float] = defaultdict(float)
    for sent in upstream.requests():
        billed[by_generation[sent["generation_id"]]] += sent["billed_cost"]
    after = live.budget()
    total = after["spent"] - before["spent"]
    worst = max(float(r["reserved_usd"]) for name in keys for r in rows[name])
    figures = {
        "global_left_usd": 0.005, "requests": 50, "keys": {
            name: {"sub_budget_usd": budgets[name], "served": served[name],
                   "refused_402_by_its_sub_budget": refused_by_key[name],
                   "refused_402_by_the_day": refused_by_day[name],
                   "spent_usd": round(spent[name], 8), "upstream_billed_usd": round(billed[name], 8),
                   "spent_of_sub_budget": round(spent[name] / budgets[name], 4)} for name in keys},
        "total_spent_usd": round(total, 8), "global_limit_left_at_start_usd": round(before["remaining"], 8),
        "upstream_billed_total_usd": round(sum(billed.values()), 8), "largest_hold_usd": round(worst, 8),
        "upstream_generations": len(upstream.requests()),
        "ledger_rows_served": sum(len(r) for r in rows.values()),
    }
    mode = live.budget()["reservations"]
    results.record("keys.json", "three_keys_fifty_concurrent" + ("" if mode == "memory" else f"_{mode}"), figures)
    print(json.dumps(figures, indent=2))

    for name, budget in budgets.items():
        assert spent[name] <= budget + 1e-9, f"key {name} spent {spent[name]} of its {budget}"
        assert key_view(live, name)["spent_today"] == pytest.approx(spent[name], abs=1e-8)
        assert spent[name] == pytest.approx(billed[name], abs=1e-9)  # the ledger equals the upstream bill
    assert total <= before["remaining"] + 1e-9, f"the day overshot: {total} spent of {before['remaining']} left"
    assert sum(served.values()) == len(upstream.requests()) == figures["ledger_rows_served"]
    a, b, c = keys
    assert refused_by_key[a] > 0  # each bound did bind: the small sub-budgets ...
    assert refused_by_key[b] > 0
    assert refused_by_day[c] > 0  # ... and the day, for the key whose sub-budget is larger
    assert refused_by_key[c] == 0


def test_a_killed_proxy_replays_each_keys_spend_from_the_journal(pg: Pg, upstream: Fake, tmp_path: Path):
    proxy = start_proxy(pg.new_database(), upstream, tmp_path, RALEX_JOURNAL=str(tmp_path / "journal.jsonl"))
    try:
        name = unique("box")
        key = add_key(proxy, name, 1)
        settled = key_chat(proxy, key)
        assert settled.status_code == 200
        wait_until(lambda: key_view(proxy, name)["spent_today"] > 0, what="the first request settled")
        upstream.faults({"kind": "slow", "chunk_delay": 5, "times": None})
        with ThreadPoolExecutor(1) as pool:
            pending = pool.submit(key_chat, proxy, key)
            wait_until(lambda: key_view(proxy, name)["held"] > 0, what="a request in flight")
            held = key_view(proxy, name)["held"]
            spent = key_view(proxy, name)["spent_today"]
            proxy.process.send_signal(signal.SIGKILL)
            proxy.process.wait(10)
            with pytest.raises(httpx.HTTPError):
                pending.result()
        upstream.faults()
        proxy = start_proxy(proxy.dsn, upstream, tmp_path, RALEX_JOURNAL=str(tmp_path / "journal.jsonl"))
        view = key_view(proxy, name)
        assert view["spent_today"] == pytest.approx(spent + held, abs=1e-8)  # interrupted: charged at its hold
        assert view["daily_budget"] == 1.0
        [interrupted] = proxy.ledger("status = 'interrupted'")
        assert interrupted["key_name"] == name
    finally:
        proxy.stop()
