"""Ralex's images install their locks as they are, and cannot be pulled from a stranger's namespace.

Offline checks of the files; tests/integration/test_image_locks.py builds each Python image's
dependency layer from scratch, and every image test builds the rest.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

# requirements file -> the export that writes it (the file's own header says the same)
EXPORTS = {
    "services/litellm/requirements.txt": ["--no-dev", "--extra", "proxy", "--no-emit-project",
                                          "--format", "requirements-txt"],
    "services/budget-exporter/requirements.txt": ["--no-dev", "--no-emit-project"],
    "services/build-requirements.txt": ["--only-group", "build", "--no-emit-project"],
    "tests/fake_openrouter/requirements.txt": ["--only-group", "fake-openrouter", "--no-emit-project"],
}
PYTHON_DOCKERFILES = {
    "services/litellm/Dockerfile": ["services/litellm/requirements.txt", "services/build-requirements.txt"],
    "services/budget-exporter/Dockerfile": ["services/budget-exporter/requirements.txt",
                                            "services/build-requirements.txt"],
    "tests/fake_openrouter/Dockerfile": ["tests/fake_openrouter/requirements.txt"],
}
BUILT = {"litellm": "LITELLM", "budget-exporter": "EXPORTER", "egress": "EGRESS", "opencode": "OPENCODE"}


def body(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.startswith("#"))


@pytest.mark.parametrize("path", sorted(EXPORTS))
def test_requirements_are_the_lock_exported(path: str):
    """A stale requirements file would install something uv.lock does not say: regenerate with the header's command."""
    uv = shutil.which("uv")
    if uv is None:
        pytest.skip("uv is not on PATH")
    out = subprocess.run([uv, "export", "--frozen", *EXPORTS[path]], cwd=ROOT, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    assert body((ROOT / path).read_text()) == body(out), f"{path} differs from uv.lock: re-run its header's command"


@pytest.mark.parametrize("path", sorted(EXPORTS))
def test_every_requirement_is_pinned_and_hashed(path: str):
    lines = (ROOT / path).read_text().replace("\\\n", " ").splitlines()
    requirements = [line for line in lines if line.strip() and not line.lstrip().startswith("#")]
    assert requirements
    for line in requirements:
        assert re.match(r"^[A-Za-z0-9_.\-]+==[^ ;]+", line), line
        assert "--hash=sha256:" in line, line


def test_the_lock_installer_never_resolves():
    """services/install-lock.sh: the lock itself (--no-deps --require-hashes, wheels only), then pip check."""
    text = (ROOT / "services" / "install-lock.sh").read_text().replace("\\\n", " ")
    install = re.search(r"pip\" install (.*)", text).group(1).split()  # type: ignore[union-attr]
    assert install == ["--no-deps", "--require-hashes", "--only-binary", ":all:", "-r", '"$requirements"']
    assert '"$venv/bin/pip" check' in text


@pytest.mark.parametrize("dockerfile", sorted(PYTHON_DOCKERFILES))
def test_python_images_install_locks_without_resolving(dockerfile: str):
    """Every venv is a lock installed by services/install-lock.sh; the only other pip install is the wheel
    just built by the locked backend, into a venv already checked, and checked again."""
    text = (ROOT / dockerfile).read_text().replace("\\\n", " ")
    installs = re.findall(r"pip install ([^&\n]*)", text)
    for args in installs:
        assert args.split()[:2] == ["--no-deps", "/tmp/wheel/*.whl"], args
    if installs:
        assert "--no-build-isolation" in text
        assert "/opt/ralex/bin/pip check" in text
    for other in ("pip3 install", "python -m pip install", "python3 -m pip install"):
        assert other not in text
    locks = re.findall(r"install-lock\.sh (/opt/\w+) /tmp/([\w-]+\.txt)", text)
    assert locks
    copied = dict(re.findall(r"^COPY (\S+requirements\.txt) /tmp/(\S+)$", text, re.M))
    assert sorted(copied) == sorted(PYTHON_DOCKERFILES[dockerfile])
    assert {name for _, name in locks} == set(copied.values())
    if "AS deps" in text:  # the stage tests/integration/test_image_locks.py builds with no cache
        assert re.search(r"^FROM \$\{PYTHON_IMAGE\} AS deps$", text, re.M)


def test_build_backend_pin_matches_the_build_system():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["build-system"]["requires"] == project["dependency-groups"]["build"]


def test_ralex_images_are_built_here_and_never_pulled():
    """`up` builds Ralex's images from this folder (pull_policy: build) under a name no registry can serve,
    tagged with the project version."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    built = {name: svc for name, svc in compose["services"].items() if "build" in svc}
    assert set(built) == set(BUILT)
    for name, svc in built.items():
        assert svc["pull_policy"] == "${RALEX_PULL_POLICY:-build}", name
        assert svc["image"] == f"${{RALEX_{BUILT[name]}_IMAGE:-ralex.invalid/{name}:{VERSION}}}", name
    fake = yaml.safe_load((ROOT / "tests" / "compose.fake.yaml").read_text())["services"]["fake-openrouter"]
    assert fake["pull_policy"] == "build"
    assert fake["image"].startswith("ralex.invalid/")
    bake = (ROOT / "docker-bake.hcl").read_text()
    assert f'variable "TAG" {{ default = "{VERSION}" }}' in bake


def test_env_example_does_not_pin_ralex_images():
    """A copied .env must not hold an old version's image names after an update."""
    env = (ROOT / ".env.example").read_text()
    for var in BUILT.values():
        assert not re.search(rf"^RALEX_{var}_IMAGE=", env, re.M), var


# --- the OpenCode lock -----------------------------------------------------------------------------

LOCK = ROOT / "services" / "opencode" / "opencode.lock"
INSTALL = ROOT / "services" / "opencode" / "install-opencode.sh"


def lock_entries() -> tuple[dict[str, str], dict[str, str]]:
    defaults, pins = {}, {}
    for line in LOCK.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if words[0] == "default":
            defaults[words[1]] = words[2]
        else:
            pins[words[0]] = words[1]
    return defaults, pins


def test_opencode_lock_has_every_default_and_only_sha512():
    defaults, pins = lock_entries()
    assert set(defaults) == {"amd64", "arm64"}
    assert f"opencode-linux-x64@{defaults['amd64']}" in pins
    assert f"opencode-linux-x64-baseline@{defaults['amd64']}" in pins  # x86-64 CPUs without AVX2
    assert f"opencode-linux-arm64@{defaults['arm64']}" in pins
    for integrity in pins.values():
        assert re.fullmatch(r"sha512-[A-Za-z0-9+/]{86}==", integrity), integrity


def fake_npm(tmp_path: Path, payload: bytes, version: str) -> dict[str, str]:
    """A PATH with stand-ins for npm (writes a tarball holding a fake opencode), install and dpkg."""
    import io
    import tarfile

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    script = f"#!/bin/sh\necho {version}\n".encode() + payload
    tgz = tmp_path / "pkg.tgz"
    if not tgz.exists():  # the same bytes on every call of one test
        with tarfile.open(tgz, "w:gz") as tar:
            info = tarfile.TarInfo("package/bin/opencode")
            info.size, info.mode = len(script), 0o755
            tar.addfile(info, io.BytesIO(script))
    (bin_dir / "npm").write_text(f"#!/bin/sh\ncp {tgz} ./pkg.tgz\necho pkg.tgz\n")
    (bin_dir / "install").write_text(f"#!/bin/sh\ncp \"$3\" {bin_dir}/opencode && chmod +x {bin_dir}/opencode\n")
    for exe in ("npm", "install"):
        (bin_dir / exe).chmod((bin_dir / exe).stat().st_mode | stat.S_IEXEC)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "TARGETARCH": "arm64",
            "HOME": str(tmp_path)}


def run_install(tmp_path: Path, lock_text: str, version: str, payload: bytes = b"") -> subprocess.CompletedProcess[str]:
    lock = tmp_path / "opencode.lock"
    lock.write_text(lock_text)
    env = fake_npm(tmp_path, payload, version or "1.0.0")
    return subprocess.run(["bash", str(INSTALL), str(lock), version], env=env, capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path)


def integrity_of(tmp_path: Path) -> str:
    import base64
    import hashlib

    return "sha512-" + base64.b64encode(hashlib.sha512((tmp_path / "pkg.tgz").read_bytes()).digest()).decode()


@pytest.mark.skipif(shutil.which("node") is None, reason="the install step hashes with node")
def test_opencode_install_refuses_a_release_that_is_not_locked(tmp_path: Path):
    done = run_install(tmp_path, "default arm64 1.0.0\nopencode-linux-arm64@1.0.0 sha512-AAAA==\n", "9.9.9")
    assert done.returncode == 1
    assert "OpenCode 9.9.9 for arm64 (opencode-linux-arm64) is not in services/opencode/opencode.lock" in done.stderr
    assert "RALEX_OPENCODE_VERSION" in done.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="the install step hashes with node")
def test_opencode_install_refuses_a_tarball_that_differs_from_the_lock(tmp_path: Path):
    done = run_install(tmp_path, "default arm64 1.0.0\nopencode-linux-arm64@1.0.0 sha512-AAAA==\n", "")
    assert done.returncode == 1
    assert "does not match the lock's sha512-AAAA==" in done.stderr


@pytest.mark.skipif(shutil.which("node") is None, reason="the install step hashes with node")
def test_opencode_install_takes_the_locked_default(tmp_path: Path):
    first = run_install(tmp_path, "", "1.0.0")  # only to produce the tarball and learn its integrity
    assert first.returncode == 1
    lock = f"default arm64 1.0.0\nopencode-linux-arm64@1.0.0 {integrity_of(tmp_path)}\n"
    done = run_install(tmp_path, lock, "")
    assert done.returncode == 0, done.stderr
    assert "OpenCode 1.0.0 (opencode-linux-arm64, sha512-" in done.stdout


def test_every_locked_opencode_release_has_its_plugin_lock():
    """The seed installs @opencode-ai/plugin from plugin-lock/VERSION.json; a release without one cannot build."""
    import json

    _, pins = lock_entries()
    for version in {pin.split("@")[1] for pin in pins}:
        lock = json.loads((ROOT / "services" / "opencode" / "plugin-lock" / f"{version}.json").read_text())
        assert lock["packages"][""]["dependencies"] == {"@opencode-ai/plugin": version}
        assert lock["packages"]["node_modules/@opencode-ai/plugin"]["version"] == version
        for where, entry in lock["packages"].items():
            if where:
                assert entry["integrity"].startswith("sha512-"), where


@pytest.mark.parametrize("arch", ["x86_64", "aarch64"])
@pytest.mark.parametrize("path", sorted(EXPORTS))
def test_every_locked_package_has_a_wheel_for_each_architecture(path: str, arch: str):
    """The images install wheels only (--only-binary :all:): each requirement that applies to CPython 3.11 on
    Linux needs a wheel for amd64 and arm64 (a Raspberry Pi) in uv.lock, or the arm64 build would fail."""
    from packaging.markers import Marker
    from packaging.utils import parse_wheel_filename

    env = {"python_version": "3.11", "python_full_version": "3.11.2", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": arch, "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    wheels = {(p["name"], p["version"]): [w["url"].rsplit("/", 1)[1] for w in p.get("wheels", [])]
              for p in lock["package"]}
    text = (ROOT / path).read_text().replace("\\\n", " ")
    missing = []
    for line in text.splitlines():
        found = re.match(r"^([A-Za-z0-9_.\-]+)==([^ ;]+)(?:\s*;\s*([^-][^\n]*?))?\s+--hash", line)
        if not found:
            continue
        name, version, marker = found.groups()
        if marker and not Marker(marker.strip()).evaluate(env):
            continue
        fits = False
        for wheel in wheels.get((name.lower().replace("_", "-"), version), []):
            _, _, _, tags = parse_wheel_filename(wheel)
            fits = fits or any(_runs_on_bookworm_cp311(tag.interpreter, tag.abi, tag.platform, arch) for tag in tags)
        if not fits:
            missing.append(f"{name}=={version}")
    assert not missing, f"no {arch} wheel for CPython 3.11 on glibc Linux in uv.lock: {missing}"


def _runs_on_bookworm_cp311(interpreter: str, abi: str, platform: str, arch: str) -> bool:
    """Whether pip on CPython 3.11, Debian bookworm (glibc 2.36), `arch` would take a wheel with this tag."""
    minor = int(interpreter[3:]) if re.fullmatch(r"cp3\d+", interpreter) else None
    python_ok = interpreter in ("py3", "cp311") or (abi == "abi3" and minor is not None and minor <= 11)
    if platform == "any":
        return python_ok
    legacy = {"manylinux1": (2, 5), "manylinux2010": (2, 12), "manylinux2014": (2, 17)}
    found = (re.fullmatch(r"(manylinux\d*)_" + arch, platform)
             or re.fullmatch(r"manylinux_(\d+)_(\d+)_" + arch, platform))
    if not found:
        return False
    glibc = legacy[found.group(1)] if found.group(1) in legacy else (int(found.group(1)), int(found.group(2)))
    return python_ok and glibc <= (2, 36)
