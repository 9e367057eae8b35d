"""Traffic from inside the stack: run with `python3 -c <this file> '<json>'` in a container attached to the
stack's backend network (the proxy image: Python and httpx). Standard library and httpx only.

One JSON request in argv[1] (or on stdin without one), one JSON answer per line on stdout:

- ``{"op": "resolve", "name": "tasks.litellm"}``: the task addresses behind a name;
- ``{"op": "call", "method": ..., "url": ..., "json": ..., "headers": ...}``: one HTTP call;
- ``{"op": "burst", "requests": [{"url", "key", "body"}, ...]}``: every request at once (non-streaming);
- ``{"op": "stream", "urls": [...], "key": ..., "seconds": ..., "concurrency": ..., "body": ...}``: streams
  spread over ``urls`` for ``seconds``; prints ``{"started": true}`` first, then the status codes per url.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sys
import time
from typing import Any

import httpx


def resolve(name: str) -> list[str]:
    try:
        return sorted({info[4][0] for info in socket.getaddrinfo(name, None, socket.AF_INET, socket.SOCK_STREAM)})
    except socket.gaierror:
        return []


def call(method: str, url: str, body: Any = None, headers: dict[str, str] | None = None) -> dict[str, Any]:
    try:
        response = httpx.request(method, url, json=body, headers=headers, timeout=30)
    except httpx.HTTPError as exc:
        return {"status": 0, "body": repr(exc)}
    try:
        data: Any = response.json()
    except ValueError:
        data = response.text
    return {"status": response.status_code, "body": data}


async def burst(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    limits = httpx.Limits(max_connections=len(requests) + 10, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        gate = asyncio.Event()

        async def one(request: dict[str, Any]) -> dict[str, Any]:
            await gate.wait()
            started = time.monotonic()
            try:
                response = await client.post(request["url"], json=request["body"],
                                             headers={"Authorization": f"Bearer {request['key']}"})
            except httpx.HTTPError as exc:
                return {"status": 0, "message": repr(exc), "seconds": time.monotonic() - started}
            message = ""
            if response.status_code != 200:
                try:
                    message = str(response.json()["error"]["message"])
                except (ValueError, KeyError, TypeError):
                    message = response.text[:500]
            return {"status": response.status_code, "message": message, "seconds": time.monotonic() - started}

        tasks = [asyncio.create_task(one(r)) for r in requests]
        await asyncio.sleep(0.2)
        gate.set()
        return list(await asyncio.gather(*tasks))


async def stream(urls: list[str], key: str, seconds: float, concurrency: int, body: dict[str, Any]
                 ) -> dict[str, list[int]]:
    codes: dict[str, list[int]] = {url: [] for url in urls}
    deadline = time.monotonic() + seconds
    counter = itertools.count()
    async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:

        async def worker(url: str) -> None:
            while time.monotonic() < deadline:
                content = f"{body['messages'][0]['content']} {next(counter)}"
                payload = {**body, "stream": True, "messages": [{"role": "user", "content": content}]}
                try:
                    async with client.stream("POST", url, json=payload) as response:
                        async for _ in response.aiter_lines():
                            pass
                        codes[url].append(response.status_code)
                except httpx.HTTPError:
                    codes[url].append(0)
                    await asyncio.sleep(0.2)

        print(json.dumps({"started": True}), flush=True)
        await asyncio.gather(*(worker(urls[i % len(urls)]) for i in range(concurrency)))
    return codes


def main() -> None:
    request = json.loads(sys.argv[1] if len(sys.argv) > 1 else sys.stdin.read())
    op = request["op"]
    if op == "resolve":
        answer: Any = resolve(request["name"])
    elif op == "call":
        answer = call(request["method"], request["url"], request.get("json"), request.get("headers"))
    elif op == "burst":
        answer = asyncio.run(burst(request["requests"]))
    elif op == "stream":
        answer = asyncio.run(stream(request["urls"], request["key"], request["seconds"], request["concurrency"],
                                    request["body"]))
    else:
        raise SystemExit(f"unknown op {op!r}")
    print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
