"""deploy/k8s as a cluster would take it: every object passes the Kubernetes schema (offline, the schemas
kubernetes-validate bundles), kustomization.yaml applies every manifest but the optional ones, the proxy
runs several replicas that share one budget, and images, settings and config copies match the stack."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml

from ralex.proxy.settings import ProxySettings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
# The oldest Kubernetes the manifests are meant for: they use nothing a newer release added.
KUBERNETES_VERSION = "1.32.0"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]

# Manifests in deploy/k8s that kustomization.yaml leaves out on purpose (docs/kubernetes.md says why).
OPTIONAL = {
    "secret.example.yaml": "the user creates the secret; placeholders are never applied",
    "servicemonitor.yaml": "a Prometheus Operator custom resource, for clusters that have the operator",
}
CUSTOM_KINDS = {"monitoring.coreos.com/v1"}  # no schema offline: checked by hand below
# What the proxy's containers may set besides ProxySettings' variables (ralex/proxy/settings.py).
PROXY_EXTRAS = {
    "RALEX_AGENT_KEY": "the agent's key, read by the gate (ralex/proxy/auth.py)",
    "RALEX_RESERVATIONS": "shared: holds live in Postgres, required with more than one replica",
    "RALEX_REPLICA_ID": "a stable name per replica (its pod's name)",
    "POSTGRES_PASSWORD": "only to build RALEX_DATABASE_URL with $(POSTGRES_PASSWORD)",
}
PROXY_PREFIXES = ("LITELLM_",)  # LiteLLM's own settings


@cache
def manifests() -> dict[str, list[dict[str, Any]]]:
    files = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
    return {p.name: [d for d in yaml.safe_load_all(p.read_text()) if d] for p in files}


@cache
def kustomization() -> dict[str, Any]:
    return yaml.safe_load((K8S / "kustomization.yaml").read_text())  # type: ignore[no-any-return]


def applied() -> Iterator[dict[str, Any]]:
    for name in kustomization()["resources"]:
        yield from manifests()[name]


def find(kind: str, name: str) -> dict[str, Any]:
    found = [d for d in applied() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in applied():
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"}:
            spec = doc["spec"]["template"]["spec"]
            claims = [{"name": t["metadata"]["name"]} for t in doc["spec"].get("volumeClaimTemplates", [])]
            yield f"{doc['kind']}/{doc['metadata']['name']}", {**spec, "claims": claims}


def generated_configmaps() -> Iterator[dict[str, Any]]:
    """The ConfigMaps kustomize's configMapGenerator makes (without the hash suffix it adds to names)."""
    for gen in kustomization()["configMapGenerator"]:
        data = {}
        for entry in gen["files"]:
            key, _, path = entry.rpartition("=")
            data[key or Path(path).name] = (K8S / path).read_text()
        yield {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": gen["name"]}, "data": data}


def env_names(spec: dict[str, Any], container: str) -> dict[str, Any]:
    """Every variable a container gets: its env list and the ConfigMaps it takes whole (envFrom)."""
    (c,) = (c for c in spec["containers"] if c["name"] == container)
    names: dict[str, Any] = {}
    for ref in c.get("envFrom", []):
        names.update(find("ConfigMap", ref["configMapRef"]["name"])["data"])
    for var in c.get("env", []):
        names[var["name"]] = var.get("value", var.get("valueFrom"))
    return names


def pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.mark.parametrize("name", sorted(manifests()))
def test_every_object_passes_the_kubernetes_schema(name):
    for doc in manifests()[name]:
        if doc["apiVersion"] in CUSTOM_KINDS:
            assert name in OPTIONAL, f"{name}: {doc['kind']} needs a CRD; keep it out of kustomization.yaml"
            continue
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["metadata"].get("namespace", "ralex") == "ralex"


def test_generated_configmaps_pass_the_kubernetes_schema():
    for cm in generated_configmaps():
        kubernetes_validate.validate(cm, KUBERNETES_VERSION, strict=True)


def test_kustomization_applies_every_manifest_but_the_optional_ones():
    listed = kustomization()["resources"]
    assert len(listed) == len(set(listed))
    for name in listed:
        assert (K8S / name).is_file(), f"kustomization.yaml lists {name}, which is missing"
    assert set(listed) == set(manifests()) - set(OPTIONAL)
    assert kustomization()["namespace"] == "ralex"
    for gen in kustomization()["configMapGenerator"]:
        for entry in gen["files"]:
            assert (K8S / entry.rpartition("=")[2]).is_file(), entry


def test_every_secret_and_configmap_referenced_exists():
    secret_keys = set(manifests()["secret.example.yaml"][0]["stringData"])
    configmaps = {d["metadata"]["name"] for d in applied() if d["kind"] == "ConfigMap"}
    generated = {cm["metadata"]["name"] for cm in generated_configmaps()}
    claims = {d["metadata"]["name"] for d in applied() if d["kind"] == "PersistentVolumeClaim"}
    for where, spec in pod_specs():
        for c in spec["containers"]:
            for var in c.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "ralex", where
                    assert ref["key"] in secret_keys, f"{where}: {ref['key']} is not in secret.example.yaml"
            for ref in c.get("envFrom", []):
                assert ref["configMapRef"]["name"] in configmaps, where
            mounted = {v["name"] for v in [*spec.get("volumes", []), *spec["claims"]]}
            for mount in c.get("volumeMounts", []):
                assert mount["name"] in mounted, (where, mount)
        for vol in spec.get("volumes", []):
            if "configMap" in vol:
                assert vol["configMap"]["name"] in generated | configmaps, (where, vol)
            if "persistentVolumeClaim" in vol:
                assert vol["persistentVolumeClaim"]["claimName"] in claims, (where, vol)


def test_the_proxy_runs_replicas_that_share_one_budget():
    proxy = find("Deployment", "litellm")
    assert proxy["spec"]["replicas"] >= 2
    spec = proxy["spec"]["template"]["spec"]
    env = env_names(spec, "litellm")
    assert env["RALEX_RESERVATIONS"] == "shared"
    assert env["RALEX_REPLICA_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["RALEX_DATABASE_URL"] == "postgresql://ralex:$(POSTGRES_PASSWORD)@postgres:5432/ralex"
    names = [v["name"] for v in spec["containers"][0]["env"]]
    assert names.index("POSTGRES_PASSWORD") < names.index("RALEX_DATABASE_URL")  # $(VAR) needs it earlier


def test_the_proxy_probes_the_route_that_answers_without_a_key():
    tree = ast.parse((ROOT / "ralex" / "proxy" / "server.py").read_text())  # not imported: it loads LiteLLM
    (public,) = (ast.literal_eval(node.value.args[0]) for node in ast.walk(tree)
                 if isinstance(node, ast.AnnAssign) and getattr(node.target, "id", "") == "PUBLIC_ROUTES"
                 and isinstance(node.value, ast.Call))
    (container,) = find("Deployment", "litellm")["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["http"] == 4000
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] in public, probe
        assert get["port"] == "http", probe


def test_the_disruption_budget_keeps_most_proxy_replicas_up():
    proxy = find("Deployment", "litellm")
    pdb = find("PodDisruptionBudget", "litellm")
    selector = pdb["spec"]["selector"]["matchLabels"]
    assert selects(selector, pod_labels(proxy))
    for doc in applied():  # and no other pods
        if doc["kind"] in {"Deployment", "StatefulSet", "Job"} and doc is not proxy:
            assert not selects(selector, pod_labels(doc)), doc["metadata"]["name"]
    replicas = proxy["spec"]["replicas"]
    allowed_down = pdb["spec"].get("maxUnavailable", replicas - pdb["spec"].get("minAvailable", replicas))
    assert 1 <= allowed_down < replicas


def test_the_proxy_and_its_job_set_only_variables_the_proxy_knows():
    known = {f.alias for f in ProxySettings.model_fields.values()} | set(PROXY_EXTRAS)
    for workload, container in (("Deployment/litellm", "litellm"), ("Job/ralex-migrate", "migrate")):
        kind, name = workload.split("/")
        spec = find(kind, name)["spec"]["template"]["spec"]
        unknown = {n for n in env_names(spec, container) if n not in known and not n.startswith(PROXY_PREFIXES)}
        assert not unknown, f"{workload} sets {sorted(unknown)}, which ralex/proxy/settings.py does not read"


def test_the_migration_job_runs_ralex_proxy_migrate_with_the_proxys_image_and_database():
    job = find("Job", "ralex-migrate")
    (migrate,) = job["spec"]["template"]["spec"]["containers"]
    (proxy,) = find("Deployment", "litellm")["spec"]["template"]["spec"]["containers"]
    assert migrate["image"] == proxy["image"]
    assert migrate["args"] == ["migrate"]
    assert "command" not in migrate  # the image's entry point, ralex-proxy
    job_env, proxy_env = (env_names(job["spec"]["template"]["spec"], "migrate"),
                          env_names(find("Deployment", "litellm")["spec"]["template"]["spec"], "litellm"))
    for name in ("RALEX_DATABASE_URL", "RALEX_EXPORTER_DB_PASSWORD", "RALEX_DAILY_BUDGET", "RALEX_TIMEZONE"):
        assert job_env[name] == proxy_env[name], name
    assert job["spec"]["ttlSecondsAfterFinished"] > 0  # gone after a while, so the next apply runs it again


def test_every_pod_runs_non_root_on_a_read_only_root_with_memory_limits():
    for where, spec in pod_specs():
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 0, where  # images name their user: give the number
        assert spec["automountServiceAccountToken"] is False, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (where, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (where, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (where, c["name"])
            assert "memory" in c["resources"]["limits"], (where, c["name"])
            assert c.get("imagePullPolicy") == "IfNotPresent", (where, c["name"])


def test_the_proxy_writes_only_where_a_volume_is_mounted():
    spec = find("Deployment", "litellm")["spec"]["template"]["spec"]
    env = env_names(spec, "litellm")
    mounts = {m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
    for path in ("/tmp", env["RALEX_RUNTIME_DIR"], str(Path(env["RALEX_JOURNAL"]).parent)):
        assert path in mounts, f"{path} is written by the proxy but the root filesystem is read-only"


def test_services_reach_their_pods_on_named_ports():
    workloads = [d for d in applied() if d["kind"] in {"Deployment", "StatefulSet"}]
    for svc in (d for d in applied() if d["kind"] == "Service"):
        targets = [w for w in workloads if selects(svc["spec"]["selector"], pod_labels(w))]
        assert len(targets) == 1, svc["metadata"]["name"]
        ports = {p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports, (svc["metadata"]["name"], port)


def test_images_are_the_ones_compose_runs_at_the_project_version():
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    defaults = {re.fullmatch(r"\$\{RALEX_[A-Z0-9_]+_IMAGE:-(.+)\}", s["image"]).group(1)  # type: ignore[union-attr]
                for s in compose.values()}
    for where, spec in pod_specs():
        for c in spec["containers"]:
            assert c["image"] in defaults, f"{where}: {c['image']} is not an image compose.yaml runs"
            if c["image"].startswith("ralex.invalid/"):
                assert c["image"].endswith(f":{VERSION}"), where
    for image in kustomization()["images"]:
        assert image["newTag"] == VERSION, image["name"]
        assert f"{image['name']}:{VERSION}" in defaults


def test_config_copies_equal_the_stacks_files():
    copies = {
        "config/ralex-rules.yml": "prometheus/rules/ralex.yml",
        "config/alertmanager.yml": "alertmanager/alertmanager.default.yml",
        "config/grafana-datasources.yml": "grafana/provisioning/datasources/prometheus.yml",
        "config/grafana-dashboards.yml": "grafana/provisioning/dashboards/ralex.yml",
        "config/ralex-budget.json": "grafana/dashboards/ralex-budget.json",
    }
    for copy, source in copies.items():
        assert (K8S / copy).read_text() == (ROOT / source).read_text(), f"copy {source} to deploy/k8s/{copy}"


def test_prometheus_scrapes_every_proxy_replica_and_what_compose_scrapes():
    k8s = yaml.safe_load((K8S / "config" / "prometheus.yml").read_text())
    compose = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    for key in ("global", "rule_files", "alerting"):
        assert k8s[key] == compose[key], key
    jobs = {j["job_name"]: j for j in k8s["scrape_configs"]}
    assert set(jobs) == {j["job_name"] for j in compose["scrape_configs"]} - {"egress"}  # no agent sandbox here
    (sd,) = jobs["litellm"]["dns_sd_configs"]
    headless = find("Service", "litellm-metrics")
    assert headless["spec"]["clusterIP"] == "None"
    assert sd["names"] == ["litellm-metrics"]
    assert sd["type"] == "A"
    (port,) = headless["spec"]["ports"]
    assert sd["port"] == port["port"]
    env = env_names(find("Deployment", "litellm")["spec"]["template"]["spec"], "litellm")
    assert str(sd["port"]) == env["RALEX_METRICS_PORT"]
    assert selects(headless["spec"]["selector"], pod_labels(find("Deployment", "litellm")))
    mounts = {m["mountPath"]: m for m in find("Deployment", "prometheus")["spec"]["template"]["spec"]["containers"][0]
              ["volumeMounts"]}
    assert k8s["rule_files"] == [f"{mounts['/etc/prometheus/rules']['mountPath']}/*.yml"]


def test_the_optional_service_monitor_selects_the_headless_metrics_service():
    monitors = {d["metadata"]["name"]: d for d in manifests()["servicemonitor.yaml"]}
    assert all(d["kind"] == "ServiceMonitor" for d in monitors.values())
    for name, service in (("litellm", "litellm-metrics"), ("budget-exporter", "budget-exporter")):
        svc = find("Service", service)
        assert selects(monitors[name]["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"]), name
        assert {e["port"] for e in monitors[name]["spec"]["endpoints"]} <= {p["name"] for p in svc["spec"]["ports"]}
    others = [d for d in applied() if d["kind"] == "Service" and d["metadata"]["name"] != "litellm-metrics"]
    assert not any(selects(monitors["litellm"]["spec"]["selector"]["matchLabels"], s["metadata"]["labels"])
                   for s in others)  # one target per replica, not one more through the load-balanced Service


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
def test_kustomize_renders_the_stack_with_generated_names_wired_in():
    result = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    names = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert doc["kind"] == "Namespace" or doc["metadata"]["namespace"] == "ralex"
        if doc["kind"] == "Deployment":
            for vol in doc["spec"]["template"]["spec"].get("volumes", []):
                if "configMap" in vol:
                    assert vol["configMap"]["name"] in names, vol
