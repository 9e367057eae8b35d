"""The Swarm stack for tests/swarm: built, deployed once per session, removed after (with the swarm itself
when the test created it). Skips, naming the reason, where no Docker engine answers."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.swarm.stack import Swarm, SwarmUnavailable, images, swarm_state

REPLICAS = 3


@pytest.fixture(scope="session")
def swarm() -> Iterator[Swarm]:
    try:
        state = swarm_state()
    except SwarmUnavailable as exc:
        pytest.skip(f"Docker Swarm tests need a Docker engine: {exc}")
    if state not in ("inactive", "active"):
        pytest.skip(f"this engine's Swarm is {state!r}: neither free to init nor a working member")
    stack = Swarm.up(f"ralex-swarm-{os.getpid()}", images(), REPLICAS)
    try:
        yield stack
    finally:
        stack.down()
