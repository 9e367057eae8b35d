"""The proxy's Ralex endpoints, called with the master key from .env.

Uses `requests` (the Docker SDK loads it anyway) so `ralexctl status` starts fast."""

from __future__ import annotations

from typing import Any

import requests

from ralex_ctl.errors import RalexError
from ralex_ctl.project import Project
from ralex_ctl.textout import safe_line


class ProxyUnavailable(RalexError):
    pass


class ProxyClient:
    def __init__(self, project: Project, timeout: float = 10.0) -> None:
        env = project.env()
        if project.joined:
            raise ProxyUnavailable(f"this folder is joined to the team server {safe_line(env['RALEX_JOIN_URL'], 200)}: "
                                   "its budget, spend and keys are its operator's (run those commands on the "
                                   "server); your key's day here: ralexctl status")
        self.base = f"http://127.0.0.1:{env.get('RALEX_PROXY_PORT') or '4000'}"
        key = env.get("LITELLM_MASTER_KEY")
        if not key:
            raise RalexError("LITELLM_MASTER_KEY is not set in .env: run `ralexctl init`")
        self._timeout = timeout
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {key}"
        self._session.trust_env = False  # 127.0.0.1: never through an HTTP(S)_PROXY

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._session.request(method, self.base + path, timeout=self._timeout, **kwargs)
        except requests.RequestException as exc:
            raise ProxyUnavailable(f"the proxy at {self.base} does not answer ({type(exc).__name__}); "
                                   "run `ralexctl up` (or `ralexctl status` to see why)") from None
        if response.status_code == 401:
            raise RalexError("the proxy refused the master key: LITELLM_MASTER_KEY in .env does not match the "
                             "running proxy (restart it with `ralexctl up`)")
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail") or response.json().get("error", {}).get("message")
            except ValueError:
                detail = response.text[:200]
            raise RalexError(f"{detail}")
        return response.json()

    def budget(self) -> dict[str, Any]:
        return dict(self._call("GET", "/ralex/budget"))

    def set_budget(self, **changes: Any) -> dict[str, Any]:
        return dict(self._call("PUT", "/ralex/budget", json={**changes, "by": "ralexctl"}))

    def route(self, body: dict[str, Any], remaining: float | None = None) -> dict[str, Any]:
        """The running proxy's decision for a chat body (``remaining``: what if only this much were left)."""
        extra = {"ralex_remaining": remaining} if remaining is not None else {}
        return dict(self._call("POST", "/ralex/route", json={**body, **extra}))

    def spend(self, days: int, by: str) -> dict[str, Any]:
        return dict(self._call("GET", "/ralex/spend", params={"days": days, "by": by}))

    def alive(self) -> bool:
        try:
            return self._session.get(self.base + "/health/liveliness", timeout=3).status_code == 200
        except requests.RequestException:
            return False

    def models(self) -> list[str]:
        return [m["id"] for m in self._call("GET", "/v1/models").get("data", [])]

    # --- client keys (ralexctl keys) ---------------------------------------------------------------
    def keys(self) -> dict[str, Any]:
        return dict(self._call("GET", "/ralex/keys"))

    def add_key(self, name: str, budget: float | None) -> dict[str, Any]:
        return dict(self._call("POST", "/ralex/keys", json={"name": name, "budget": budget}))

    def revoke_key(self, name: str) -> dict[str, Any]:
        return dict(self._call("DELETE", f"/ralex/keys/{name}"))

    def set_key_budget(self, name: str, budget: float | None) -> dict[str, Any]:
        return dict(self._call("PUT", f"/ralex/keys/{name}", json={"budget": budget}))
