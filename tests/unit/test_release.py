"""Multi-arch publishing: docker-bake.hcl builds what compose.yaml builds, for amd64 and arm64, and the
release workflow passes two linters offline (GitHub's workflow schema and zizmor's security audits)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"


def tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent))
    assert found, f"{name} is not installed; run `uv sync`"
    return found


def test_bake_builds_every_image_compose_builds_for_both_platforms():
    bake = (ROOT / "docker-bake.hcl").read_text()
    targets = dict(re.findall(r'target "([a-z-]+)" \{.*?dockerfile = "([^"]+)"', bake, re.S))
    services = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    built = {name: s["build"]["dockerfile"] for name, s in services.items() if "build" in s}
    assert targets == built
    assert re.search(r'platforms\s*=\s*\["linux/amd64", "linux/arm64"\]', bake)
    assert 'type=provenance,mode=max' in bake
    for name in built:
        image = services[name]["image"]  # ${RALEX_X_IMAGE:-ralex.invalid/<name>:<version>}: the bake's default tag
        default = re.fullmatch(r"\$\{RALEX_[A-Z]+_IMAGE:-(.+)\}", image).group(1)  # type: ignore[union-attr]
        assert default == f"ralex.invalid/{name}:0.1.0"
        assert 'variable "REGISTRY" { default = "ralex.invalid" }' in bake
        assert f'"${{REGISTRY}}/{name}:${{TAG}}"' in bake


def test_release_workflow_passes_the_workflow_schema():
    result = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_release_workflow_passes_zizmor():
    result = subprocess.run([tool("zizmor"), "--offline", "--no-progress", str(WORKFLOW)], capture_output=True,
                            text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings" in result.stdout + result.stderr


def test_release_pushes_on_tags_with_least_privilege():
    workflow = yaml.safe_load(WORKFLOW.read_text())
    assert workflow[True]["push"]["tags"] == ["v*"]  # YAML 1.1 reads the key `on` as True
    assert workflow["permissions"] == {}
    job = workflow["jobs"]["images"]
    assert job["permissions"] == {"contents": "read", "packages": "write"}
    uses = [step["uses"] for step in job["steps"] if "uses" in step]
    assert all(re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u) for u in uses), uses
    assert any(u.startswith("docker/bake-action@") for u in uses)
