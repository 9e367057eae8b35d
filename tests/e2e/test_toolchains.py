"""The agent's toolchain by choice: `ralexctl sandbox toolchain python` and `ralexctl up` give the agent
Python, and an OpenCode turn (tool calls scripted by the fake) makes a failing Python project pass: a
venv in the workspace, the missing dependency installed from PyPI through the egress proxy's allow-list,
pytest green. Then the stack goes back to the node toolchain the rest of the suite uses.

Off this machine the preset's image is python:3.12-slim-bookworm; here it is the python stand-in
(RALEX_PYTHON_IMAGE), given the way a user overrides .env: RALEX_AGENT_BASE_IMAGE in the environment.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator

import pytest

from ralex_ctl.project import read_env
from tests.e2e.conftest import AGENT_UID, Stack, ralexctl_path
from tests.e2e.test_egress import agent, egress_log

pytestmark = pytest.mark.e2e

CALC = "import six\n\n\ndef add(a, b):\n    return a + b\n\n\nLABEL = six.text_type('sum')\n"
TEST_CALC = "from calc import LABEL, add\n\n\ndef test_add():\n    assert add(2, 3) == 5\n    assert LABEL == 'sum'\n"
REQUIREMENTS = "six==1.17.0\n"


def switch(stack: Stack, preset: str, env: dict[str, str]) -> None:
    chosen = subprocess.run([ralexctl_path(), "sandbox", "toolchain", preset], cwd=stack.root, env=env,
                            capture_output=True, text=True, timeout=60, check=False)
    assert chosen.returncode == 0, chosen.stdout + chosen.stderr
    build = subprocess.run(["docker", "compose", "build", "opencode"], cwd=stack.root, env=env, capture_output=True,
                           text=True, timeout=1800, check=False)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    up = subprocess.run([ralexctl_path(), "up", "opencode"], cwd=stack.root, env=env, capture_output=True,
                        text=True, timeout=600, check=False)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]


@pytest.fixture(scope="module")
def python_agent(stack: Stack) -> Iterator[Stack]:
    python_env = {**stack.process_env, "RALEX_OPENCODE_IMAGE": "ralex.invalid/opencode:python-test",
                  "RALEX_AGENT_BASE_IMAGE": os.environ.get("RALEX_PYTHON_IMAGE", "python:3.12-slim-bookworm")}
    opened = stack.ralexctl("sandbox", "network", "packages")
    assert opened.returncode == 0, opened.stdout + opened.stderr
    switch(stack, "python", python_env)
    try:
        yield Stack(stack.root, stack.workspace, {**stack.env, **read_env(stack.root / ".env")}, stack.up_seconds,
                    python_env)
    finally:
        switch(stack, "node", stack.process_env)
        closed = stack.ralexctl("sandbox", "network", "none")
        assert closed.returncode == 0, closed.stdout + closed.stderr


def test_the_python_toolchain_has_python_and_no_node(python_agent: Stack):
    assert python_agent.env["RALEX_AGENT_TOOLCHAIN"] == "python"
    out, err, code = agent(python_agent, "python3 --version && python3 -m venv --help >/dev/null && echo venv; "
                                         "command -v node || echo no-node; opencode --version; id -u")
    assert code == 0, err
    lines = out.split()
    assert "venv" in lines
    assert "no-node" in lines
    assert lines[-1] == str(AGENT_UID)


def test_an_opencode_turn_installs_the_missing_dependency_through_the_allow_list_and_pytest_passes(
        python_agent: Stack):
    stack = python_agent
    project = stack.workspace / "py-demo"
    project.mkdir()
    for name, text in (("calc.py", CALC), ("test_calc.py", TEST_CALC), ("requirements.txt", REQUIREMENTS)):
        (project / name).write_text(text)
    for path in (project, *project.iterdir()):
        os.chown(path, AGENT_UID, AGENT_UID)
    first = ("cd /workspace/py-demo && python3 -m venv .venv && .venv/bin/pip install -q pytest==8.3.4 "
             "&& .venv/bin/python -m pytest -q; echo exit=$?")
    second = "cd /workspace/py-demo && .venv/bin/pip install -q -r requirements.txt && .venv/bin/python -m pytest -q"
    stack.fake_call("POST", "/_fake/reset")
    stack.fake_call("POST", "/_fake/script", {"replies": [
        {"tool_calls": [{"name": "bash", "arguments": {"command": first, "description": "Run the tests in a venv"}}],
         "requires_tools": True},
        {"tool_calls": [{"name": "bash", "arguments": {"command": second,
                                                       "description": "Install the requirements, rerun the tests"}}],
         "requires_tools": True},
        {"content": "Installed six from requirements.txt; the test passes.", "requires_tools": True},
    ]})
    since = time.time() - 1
    out, err, code = stack.exec("opencode", "opencode", "run", "--model", "ralex/cheap",
                                "make the tests in py-demo pass")
    assert code == 0, out + err
    bodies = [c["body"] for c in stack.fake_call("GET", "/_fake/requests")["requests"]]
    results = [m["content"] for b in bodies for m in b.get("messages") or [] if m.get("role") == "tool"]
    shown = json.dumps(results)
    assert "No module named 'six'" in shown, shown  # the first run fails for the missing dependency
    assert "1 passed" in shown, shown
    assert (project / ".venv" / "pyvenv.cfg").exists()  # bin/python links to the box's interpreter
    assert (project / ".venv").stat().st_uid == AGENT_UID
    rerun, err, code = agent(stack, "cd /workspace/py-demo && .venv/bin/python -m pytest -q")
    assert code == 0, rerun + err
    hosts = {line[3].rsplit(":", 1)[0] for line in egress_log(stack, since)}
    assert hosts == {"pypi.org", "files.pythonhosted.org"}, hosts
