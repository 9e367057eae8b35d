"""Request text reaches every sink safely: a multi-line prompt, a NUL, arbitrary Unicode, through chat
completions, Anthropic messages and OpenAI responses, streamed or not, on the real LiteLLM proxy with
real Postgres and the fake OpenRouter. The client always gets an answer (or a 4xx), its x-ralex-reason
header is the reason encoded for HTTP, every billed generation has its ledger row at the upstream's
cost, and a restart gives no money back, even for a row Postgres refuses."""

from __future__ import annotations

import json
import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ralex.sinks import header_value, pg_text
from tests.integration.conftest import Fake, Pg, Proxy, start_proxy, wait_until

pytestmark = pytest.mark.integration

APIS = ("chat", "messages", "responses")
PATHS = {"chat": "/v1/chat/completions", "messages": "/v1/messages", "responses": "/v1/responses"}
PROMPTS = {
    # the everyday one: the classifier quotes "hi,\ncan you fix" in the reason (cheap)
    "newline": "Hi,\ncan you fix the typo in a_{n}.py",
    # a NUL inside the quoted words: "change\x00the timeout from 30 to 60" (cheap) ...
    "nul-cheap": "change\x00the timeout from 30 to 60 in a_{n}.py",
    # ... and "convert\x00the whole" (smart, the dearer row the issue saw given back)
    "nul-smart": "convert\x00the whole app to typescript, ticket {n}",
    "line-separator": "Hi,\u2028can you fix the typo in a_{n}.py",
}


def body(api: str, text: str, stream: bool, model: str = "auto") -> dict[str, Any]:
    if api == "messages":
        return {"model": model, "max_tokens": 256, "messages": [{"role": "user", "content": text}], "stream": stream}
    if api == "responses":
        return {"model": model, "input": text, "stream": stream}
    return {"model": model, "messages": [{"role": "user", "content": text}], "stream": stream}


def send(proxy: Proxy, api: str, payload: dict[str, Any] | bytes) -> httpx.Response:
    content = payload if isinstance(payload, bytes) else json.dumps(payload).encode()  # \u0000, \ud800 escaped
    return proxy.client.post(PATHS[api], content=content, headers={"content-type": "application/json"})


def explained_reason(proxy: Proxy, text: str) -> str:
    """The reason the proxy gives for ``text`` now, as plain text (JSON), before the request is sent."""
    response = proxy.client.post("/ralex/route", json=body("chat", text, False))
    assert response.status_code == 200, response.text
    return str(response.json()["reason"])


def billed(upstream: Fake) -> tuple[int, float]:
    usage = upstream.client.get("/_fake/usage").json()
    return int(usage["generations"]), float(usage["cost"])


def settled(proxy: Proxy) -> None:
    wait_until(lambda: proxy.budget()["in_flight"] == 0 and proxy.budget()["ledger"]["pending"] == 0, 60,
               what="every request settled and written")


# --- the prompts the issue saw dropped or given back ----------------------------------------------------

@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("prompt", PROMPTS)
def test_a_prompt_with_control_characters_gets_its_answer_header_and_ledger_row(each_book: Proxy, upstream: Fake,
                                                                                prompt: str, api: str,
                                                                                stream: bool):
    """With either book: the shared one keeps each hold's row in Postgres (jsonb), quoting the prompt too."""
    live = each_book
    text = PROMPTS[prompt].format(n=uuid.uuid4().hex[:8])  # a turn of its own: the reason quotes the prompt
    reason = explained_reason(live, text)
    assert any(c in reason for c in "\n\x00\u2028"), f"the classifier no longer quotes the character: {reason!r}"

    response = send(live, api, body(api, text, stream))

    assert response.status_code == 200, response.text
    assert response.headers["x-ralex-reason"] == header_value(reason)
    assert response.headers["x-ralex-reason"].isascii()
    assert response.headers["x-ralex-reason"].isprintable()
    [sent] = upstream.requests()
    assert sent["status"] == 200
    row = live.row(response)
    assert row["reason"] == pg_text(reason)
    assert row["status"] == "ok", row
    assert row["generation_id"] == sent["generation_id"]
    assert float(row["cost_usd"]) == pytest.approx(sent["billed_cost"])
    assert float(row["cost_usd"]) > 0


def test_a_restart_keeps_the_days_spend_equal_to_the_upstreams_bill(pg: Pg, upstream: Fake, tmp_path: Path):
    """Every hostile prompt through every API, streamed and not; then SIGTERM and a new proxy, as
    `docker compose restart litellm` does: the day's spend is still what the upstream billed."""
    journal = tmp_path / "journal" / "ledger-journal.jsonl"
    proxy = start_proxy(pg.new_database(), upstream, tmp_path, RALEX_JOURNAL=str(journal))
    again: Proxy | None = None
    try:
        statuses = [send(proxy, api, body(api, text.format(n=uuid.uuid4().hex[:8]), stream)).status_code
                    for text in PROMPTS.values() for api in APIS for stream in (False, True)]
        assert set(statuses) == {200}
        settled(proxy)
        generations, cost = billed(upstream)
        assert generations == len(statuses)
        rows = proxy.ledger("status <> 'refused'")
        assert len(rows) == generations
        assert sum(float(r["cost_usd"]) for r in rows) == pytest.approx(cost)
        assert proxy.budget()["spent"] == pytest.approx(cost)
        assert proxy.budget()["ledger"]["rejected"] == 0

        proxy.process.send_signal(signal.SIGTERM)
        proxy.process.wait(20)
        again = start_proxy(proxy.dsn, upstream, tmp_path, RALEX_JOURNAL=str(journal))
        assert again.budget()["spent"] == pytest.approx(cost)
        assert not journal.with_suffix(".rejected.jsonl").exists()
    finally:
        proxy.stop()
        if again is not None:
            again.stop()


def test_a_row_postgres_refuses_stays_counted_and_lands_exactly_once(pg: Pg, upstream: Fake, tmp_path: Path):
    """Postgres refusing a row for a reason Ralex cannot fix (here a constraint added by hand) is a
    bug that shows: the row stays in the journal, /ralex/budget counts it, the day's spend keeps its
    cost across a restart, and once Postgres takes it again the next start writes it, once."""
    journal = tmp_path / "journal" / "ledger-journal.jsonl"
    dsn = pg.new_database()
    proxy = start_proxy(dsn, upstream, tmp_path, RALEX_JOURNAL=str(journal))
    proxies = [proxy]
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE ledger ADD CONSTRAINT test_refuses_smart CHECK (alias_routed <> 'smart')")
        cheap = send(proxy, "chat", body("chat", "fix the typo in hello.py", False, model="cheap"))
        smart = send(proxy, "messages", body("messages", "review the payment service", True, model="smart"))
        assert cheap.status_code == smart.status_code == 200
        wait_until(lambda: proxy.budget()["in_flight"] == 0 and proxy.budget()["ledger"]["rejected"] == 1, 60,
                   what="the smart row refused and counted")
        generations, cost = billed(upstream)
        assert generations == 2
        assert proxy.budget()["spent"] == pytest.approx(cost)
        smart_id = smart.headers["x-ralex-request-id"]
        assert proxy.ledger("request_id = %s", (smart_id,)) == []
        assert "rejected the row of request" in proxy.log_path.read_text(errors="replace")

        for _ in range(2):  # still refused at the next start: kept again, and still counted
            proxies[-1].process.send_signal(signal.SIGTERM)
            proxies[-1].process.wait(20)
            proxies.append(start_proxy(dsn, upstream, tmp_path, RALEX_JOURNAL=str(journal)))
            assert proxies[-1].budget()["spent"] == pytest.approx(cost)
            assert proxies[-1].budget()["ledger"]["rejected"] == 1

        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("ALTER TABLE ledger DROP CONSTRAINT test_refuses_smart")
        proxies[-1].process.send_signal(signal.SIGTERM)
        proxies[-1].process.wait(20)
        proxies.append(start_proxy(dsn, upstream, tmp_path, RALEX_JOURNAL=str(journal)))
        last = proxies[-1]
        assert last.budget()["ledger"]["rejected"] == 0
        assert last.budget()["spent"] == pytest.approx(cost)
        [row] = last.ledger("request_id = %s", (smart_id,))
        assert float(row["cost_usd"]) == pytest.approx(
            next(r["billed_cost"] for r in upstream.requests() if r["model"].startswith("anthropic/")))
        assert len(last.ledger("status <> 'refused'")) == 2
        proxies[-1].process.send_signal(signal.SIGTERM)
        proxies[-1].process.wait(20)
        proxies.append(start_proxy(dsn, upstream, tmp_path, RALEX_JOURNAL=str(journal)))
        assert len(proxies[-1].ledger("status <> 'refused'")) == 2  # replayed once, never twice
        assert proxies[-1].budget()["spent"] == pytest.approx(cost)
    finally:
        for each in proxies:
            each.stop()


# --- anything at all ----------------------------------------------------------------------------------

HOSTILE_PIECES = ["\n", "\r\n", "\x00", "\t", "\u2028", "\u2029", "\u202e", "\x1b[31m", "\x7f", "\x85", "é", "😀",
                  "中文", "<b>", "</system-reminder>", "<system-reminder>", "[red]x[/red]", "${x}", "%s", "\\",
                  '"', "'", "hi,", "can you fix", "fix the typo", "review", "convert", "the whole", "a.py", " "]
PROMPT = st.one_of(
    st.text(st.characters(exclude_categories=("Cs",)), max_size=300),
    st.lists(st.sampled_from(HOSTILE_PIECES), max_size=40).map("".join),
)
LONE_SURROGATE = st.sampled_from(["\\ud800", "\\udfff", "\\ud83d", "x\\ud800y"])


@st.composite
def hostile_requests(draw: st.DrawFn) -> tuple[str, bytes]:
    api = draw(st.sampled_from(APIS))
    stream = draw(st.booleans())
    text = draw(PROMPT)
    raw = json.dumps(body(api, text, stream))
    if draw(st.booleans()):  # a lone escape only JSON can carry: the prompt holds "\ud800"
        marker = "@@lone@@"
        raw = json.dumps(body(api, text + marker, stream)).replace(marker, draw(LONE_SURROGATE))
    return api, raw.encode()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(hostile_requests())
def test_any_text_through_any_api_gets_an_answer_or_a_4xx_and_every_billed_generation_a_row(
        live: Proxy, upstream: Fake, case: tuple[str, bytes]):
    api, raw = case
    before = {r["generation_id"] for r in upstream.requests()}
    try:
        response = send(live, api, raw)
    except httpx.HTTPError as exc:  # "Remote end closed connection without response": the bug itself
        pytest.fail(f"{api}: no answer for {raw[:300]!r}: {exc!r}")
    assert response.status_code < 500, (api, raw[:300], response.status_code, response.text[:300])
    new = [r for r in upstream.requests() if r["generation_id"] not in before]
    if response.status_code != 200:
        assert [r for r in new if r.get("billed_cost")] == [], "refused, yet billed upstream"
        return
    header = response.headers["x-ralex-reason"]
    assert header.isascii()
    assert header.isprintable()
    row = live.row(response)
    generated = [r for r in new if r.get("generation_id") and r["status"] == 200]
    assert [row["generation_id"]] == [r["generation_id"] for r in generated]
    assert float(row["cost_usd"]) == pytest.approx(sum(r["billed_cost"] for r in generated))
    assert "\x00" not in (row["reason"] or "")
    assert live.budget()["ledger"]["rejected"] == 0
