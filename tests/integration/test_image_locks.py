"""Each Python image's dependency layer, built from scratch: a lock that a new upstream release (or
the base image's pip) could break fails here, in CI, not on a user's first `ralexctl up`.

`docker build --no-cache --target deps` from RALEX_PYTHON_IMAGE (the public python image, or the
sandbox's stand-in with Debian's pip 23): the whole lock installed with --no-deps --require-hashes,
wheels only, then `pip check`. The fake OpenRouter's image is the same install and nothing else.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from tests.integration.conftest import ROOT

pytestmark = pytest.mark.compose

PYTHON_IMAGE = os.environ.get("RALEX_PYTHON_IMAGE") or "python:3.11-slim-bookworm"
TARGETS = {  # Dockerfile -> build target (None: the whole file)
    "services/litellm/Dockerfile": "deps",
    "services/budget-exporter/Dockerfile": "deps",
    "tests/fake_openrouter/Dockerfile": None,
}


@pytest.mark.parametrize("dockerfile", sorted(TARGETS))
def test_dependency_layer_builds_from_the_lock_with_no_cache(dockerfile: str):
    tag = f"ralex.invalid/lock-check:{uuid.uuid4().hex[:8]}"
    target = TARGETS[dockerfile]
    command = ["docker", "build", "--no-cache", "--pull=false", "--build-arg", f"PYTHON_IMAGE={PYTHON_IMAGE}",
               "-f", dockerfile, "-t", tag, *(["--target", target] if target else []), "."]
    started = time.monotonic()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800, check=False)
    try:
        assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-6000:]}\n{done.stderr[-6000:]}"
        pip = "/opt/fake/bin/pip" if target is None else "/opt/ralex/bin/pip"
        check = subprocess.run(["docker", "run", "--rm", "--entrypoint", pip, tag, "check"], capture_output=True,
                               text=True, timeout=300, check=False)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "No broken requirements found" in check.stdout
        print(f"{dockerfile} ({target or 'image'}) from {PYTHON_IMAGE}, no cache: {time.monotonic() - started:.0f} s")
    finally:
        subprocess.run(["docker", "image", "rm", "-f", tag], capture_output=True, timeout=120, check=False)
