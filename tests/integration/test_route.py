"""One implementation of "where would this request go": admission, `POST /ralex/route` and
`ralexctl route` against the running proxy agree, and bad input is a 400, never a 500."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ralex_ctl.cli import app
from tests.integration.conftest import MASTER_KEY, Fake, Proxy

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def project(live: Proxy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Ralex folder whose .env points ralexctl at the running proxy."""
    root = Path(__file__).resolve().parents[2]
    (tmp_path / "compose.yaml").write_text((root / "compose.yaml").read_text())
    (tmp_path / ".env").write_text(f"LITELLM_MASTER_KEY={MASTER_KEY}\nRALEX_PROXY_PORT={live.port}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RALEX_DATABASE_URL", raising=False)
    return tmp_path


def test_ralexctl_route_asks_the_running_proxy_with_its_live_caps_and_budget(live: Proxy, project: Path,
                                                                           upstream: Fake):
    live.set_remaining(3.0)
    live.client.put("/ralex/budget", json={"caps": {"smart": 0.42}}).raise_for_status()
    try:
        result = runner.invoke(app, ["route", "--json", "review the auth module for race conditions"])
        assert result.exit_code == 0, result.output
        payload = json.loads(result.output)
        assert payload["source"] == "proxy"
        assert payload["caps"]["smart"] == pytest.approx(0.42)
        assert payload["remaining"] == pytest.approx(3.0, abs=1e-5)
        assert payload["alias"] == "smart"
        # what-if, on the proxy's live settings: $0.30 left is the emergency tier
        what_if = json.loads(runner.invoke(app, ["route", "--json", "fix the typo", "--remaining", "0.3"]).output)
        assert (what_if["source"], what_if["tier"], what_if["max_tokens"]) == ("proxy", "emergency", 200)
        assert live.budget()["remaining"] == pytest.approx(3.0, abs=1e-5)  # a preview holds nothing
        assert upstream.requests() == []
    finally:
        live.client.put("/ralex/budget", json={"caps": {"smart": 0.01}}).raise_for_status()


def test_the_preview_is_what_admission_then_does(live: Proxy, upstream: Fake):
    body = {"model": "auto", "messages": [{"role": "user", "content": "design a plugin system for exporters"}]}
    preview = live.client.post("/ralex/route", json=body).json()
    served = live.client.post("/v1/chat/completions", json=body)
    assert served.headers["x-ralex-route"] == preview["alias"]
    assert served.headers["x-ralex-max-tokens"] == str(preview["max_tokens"])


@pytest.mark.parametrize(("body", "text"), [
    ({"model": "gpt-4", "messages": [{"role": "user", "content": "hi"}]}, "unknown model 'gpt-4'"),
    ({"model": "auto"}, "no 'messages'"),
    ({"model": "auto", "messages": [{"role": "user", "content": 5}]}, "messages[0].content"),
    ({"model": "auto", "messages": [{"role": "user", "content": "hi"}], "ralex_remaining": "lots"}, "ralex_remaining"),
    (["not", "an", "object"], "JSON object"),
])
def test_route_endpoint_bad_input_is_a_400(live: Proxy, body, text):
    response = live.client.post("/ralex/route", json=body)
    assert response.status_code == 400, response.text
    answer = response.json()
    message = answer["detail"] if "detail" in answer else answer["error"]["message"]
    assert text in message
