"""deploy/swarm.yaml read as a file (no Docker needed): the images, settings and files it names are the
stack's own, and the proxy runs as replicas on the shared book."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from tests.swarm.stack import ROOT, SECRETS, STACK_FILE, TEST_FILE

IMAGE = re.compile(r"\$\{(RALEX_[A-Z_]+_IMAGE):-([^}]+)\}")


def stack() -> dict[str, Any]:
    return dict(yaml.safe_load(STACK_FILE.read_text()))


def test_every_image_is_chosen_as_compose_yaml_chooses_it():
    compose = dict(IMAGE.findall((ROOT / "compose.yaml").read_text()))
    services = stack()["services"]
    for name, service in services.items():
        found = IMAGE.fullmatch(service["image"])
        assert found, f"{name}: {service['image']} is not ${{RALEX_*_IMAGE:-default}}"
        assert compose[found[1]] == found[2], f"{name}: default {found[2]}, compose.yaml {compose[found[1]]}"


def test_the_proxy_runs_replicas_on_the_shared_book_with_stable_names():
    proxy = stack()["services"]["litellm"]
    assert proxy["deploy"]["replicas"] == "${RALEX_PROXY_REPLICAS:-3}"
    assert proxy["deploy"]["endpoint_mode"] == "${RALEX_PROXY_ENDPOINT_MODE:-vip}"
    assert proxy["environment"]["RALEX_RESERVATIONS"] == "shared"
    assert proxy["environment"]["RALEX_REPLICA_ID"] == "proxy-{{.Task.Slot}}"
    assert proxy["deploy"]["update_config"]["order"] == "stop-first"  # never two tasks with one name
    assert "ledger-spool:/var/lib/ralex/spool" in proxy["volumes"]
    assert proxy["healthcheck"]["test"][-1].endswith("/health/liveliness', timeout=2)")


def test_every_service_but_the_one_shot_migration_has_a_healthcheck():
    for name, service in stack()["services"].items():
        assert ("disable" in service["healthcheck"]) == (name == "migrate"), name


def test_secrets_are_the_files_the_services_read_and_every_file_exists():
    data = stack()
    external = {name for name, s in data["secrets"].items() if s.get("external")}
    assert external == set(SECRETS)
    for name, item in {**data["configs"], **data["secrets"]}.items():
        if "file" in item:
            path = re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", item["file"])
            assert (STACK_FILE.parent / path).is_file(), f"{name}: {path}"
    assert data["networks"]["backend"]["attachable"] is True


def test_prometheus_scrapes_every_task_and_loads_the_stacks_rules():
    config = yaml.safe_load((STACK_FILE.parent / "swarm" / "prometheus.yml").read_text())
    litellm = next(job for job in config["scrape_configs"] if job["job_name"] == "litellm")
    assert litellm["dns_sd_configs"][0]["names"] == ["tasks.litellm"]
    assert litellm["dns_sd_configs"][0]["port"] == 9401
    assert stack()["configs"]["prometheus_rules"]["file"] == "../prometheus/rules/ralex.yml"


def test_the_test_overlay_only_adds_the_fake():
    overlay = yaml.safe_load(Path(TEST_FILE).read_text())
    assert set(overlay["services"]) == {"fake-openrouter"}
