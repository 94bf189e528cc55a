"""deploy/k8s manifests: schema-valid for Kubernetes 1.30 and wired as one pod per shard."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.queries import ROOT
from workers.settings import Settings

K8S = ROOT / "deploy" / "k8s"
# The pod-index label appeared in 1.28 (beta, on by default); 1.30 is a supported release.
KUBERNETES_VERSION = "1.30.0"
POD_INDEX_FIELD = "metadata.labels['apps.kubernetes.io/pod-index']"


# Values that stand for a credential someone still has to fill in.
PLACEHOLDER = re.compile(r"change-?me|placeholder|example|^\.\.\.$|^<.*>$|^x+$|^$", re.I)


def resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    return docs


def render(folder: Path) -> list[dict[str, Any]]:
    """What `kubectl apply -k folder` would apply (kubectl is not needed): the resources,
    nested kustomizations, the Secrets and ConfigMaps of generators, the namespace."""
    kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
    docs: list[dict[str, Any]] = []
    for name in kustomization.get("resources", []):
        path = folder / name
        if path.is_dir():
            docs.extend(render(path))
        else:
            docs.extend(d for d in yaml.safe_load_all(path.read_text()) if d)
    for kind, key in (("Secret", "secretGenerator"), ("ConfigMap", "configMapGenerator")):
        for generator in kustomization.get(key, []):
            literals = dict(item.split("=", 1) for item in generator.get("literals", []))
            files = {Path(f).name: (folder / f).read_text() for f in generator.get("files", [])}
            envs = {}
            for env_file in generator.get("envs", []):
                lines = (folder / env_file).read_text().splitlines()
                envs.update(line.split("=", 1) for line in lines if "=" in line)
            data = {**literals, **files, **envs}
            docs.append({"kind": kind, "metadata": {"name": generator["name"]}, "data": data})
    for doc in docs:
        if "namespace" in kustomization:
            doc["metadata"]["namespace"] = kustomization["namespace"]
    return docs


def secret_values(doc: dict[str, Any]) -> dict[str, str]:
    values = dict(doc.get("stringData") or {})
    for key, value in (doc.get("data") or {}).items():
        try:
            values[key] = base64.b64decode(value, validate=True).decode()
        except ValueError:
            values[key] = value
    return values


def test_applying_the_kustomization_never_overwrites_real_credentials() -> None:
    """The README creates the Secret `pidelta` by hand before `kubectl apply -k`: a Secret
    of that name, or any Secret with placeholder values, in the kustomization would replace
    the real credentials on every apply."""
    rendered = render(K8S)
    assert {d["metadata"].get("namespace") for d in rendered} == {"pidelta"}
    secrets = [d for d in rendered if d["kind"] == "Secret"]
    refs = {r["secretRef"]["name"] for r in container()["envFrom"] if "secretRef" in r}
    assert refs == {"pidelta"}
    assert not [d for d in secrets if d["metadata"]["name"] in refs]
    for doc in secrets:
        bad = {k for k, v in secret_values(doc).items() if PLACEHOLDER.search(v)}
        assert not bad, f"Secret {doc['metadata']['name']} holds placeholders: {sorted(bad)}"


def test_the_readme_creates_the_namespace_and_the_secret_before_applying() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("**Kubernetes**") :]
    block = section[section.index("```sh") : section.index("```", section.index("```sh") + 5)]
    steps = [line for line in block.splitlines()[1:] if line and not line.startswith(" ")]
    assert steps == [
        "kubectl create namespace pidelta",
        "kubectl -n pidelta create secret generic pidelta \\",
        "kubectl apply -k deploy/k8s",
    ]
    assert "--from-literal=PIDELTA_PI_USERNAME=" in block
    assert "--from-literal=PIDELTA_PI_PASSWORD=" in block


def one(kind: str) -> dict[str, Any]:
    (doc,) = [d for d in resources() if d["kind"] == kind]
    return doc


def container() -> dict[str, Any]:
    (c,) = one("StatefulSet")["spec"]["template"]["spec"]["containers"]
    return c


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize(
    "doc",
    [d for d in resources() if d["apiVersion"] != "monitoring.coreos.com/v1"],
    ids=lambda d: f"{d['kind']}/{d['metadata']['name']}",
)
def test_schema_valid_strict(doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_pod_monitor_structure() -> None:
    """kubernetes-validate has no schemas for CRDs, so the PodMonitor is checked by hand."""
    monitor = one("PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    spec = monitor["spec"]
    assert set(spec) == {"jobLabel", "selector", "podMetricsEndpoints"}
    pod_labels = one("StatefulSet")["spec"]["template"]["metadata"]["labels"]
    assert spec["selector"]["matchLabels"].items() <= pod_labels.items()
    # The job label value becomes "pidelta", the job the alert rules select.
    assert pod_labels[spec["jobLabel"]] == "pidelta"
    (endpoint,) = spec["podMetricsEndpoints"]
    assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout"}
    assert endpoint["port"] in {p["name"] for p in container()["ports"]}
    assert endpoint["path"] == "/metrics"


def test_shard_index_is_the_pod_ordinal_and_count_is_replicas() -> None:
    env = {e["name"]: e for e in container()["env"]}
    index = env["PIDELTA_SHARD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert index == POD_INDEX_FIELD
    assert int(env["PIDELTA_SHARD_COUNT"]["value"]) == one("StatefulSet")["spec"]["replicas"]
    config = one("ConfigMap")["data"]
    assert "PIDELTA_SHARD_INDEX" not in config
    assert "PIDELTA_SHARD_COUNT" not in config


def test_config_keys_are_real_settings_and_validate() -> None:
    fields = {f"PIDELTA_{n.upper()}" for n in Settings.model_fields}
    config = one("ConfigMap")["data"]
    assert set(config) <= fields
    secret = {"PIDELTA_PI_USERNAME": "svc", "PIDELTA_PI_PASSWORD": "from-the-secret"}
    merged = {**config, **secret, "PIDELTA_SHARD_INDEX": "2", "PIDELTA_SHARD_COUNT": "3"}
    Settings(**{k.removeprefix("PIDELTA_").lower(): v for k, v in merged.items()})
    refs = {next(iter(r.values()))["name"] for r in container()["envFrom"]}
    assert refs == {one("ConfigMap")["metadata"]["name"], "pidelta"}


def test_probes_ports_and_services_agree() -> None:
    c = container()
    port = int(one("ConfigMap")["data"]["PIDELTA_METRICS_PORT"])
    assert c["ports"] == [{"name": "metrics", "containerPort": port, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    services = {d["metadata"]["name"]: d["spec"] for d in resources() if d["kind"] == "Service"}
    statefulset = one("StatefulSet")["spec"]
    assert services[statefulset["serviceName"]]["clusterIP"] == "None"
    for spec in services.values():
        assert spec["selector"] == statefulset["selector"]["matchLabels"]
        assert [p["port"] for p in spec["ports"]] == [port]
    assert one("PodDisruptionBudget")["spec"]["selector"] == statefulset["selector"]


def test_graceful_termination_resources_and_hardening() -> None:
    pod = one("StatefulSet")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001, "the Dockerfile's USER"
    c = container()
    assert c["args"] == ["run"]
    assert set(c["resources"]) == {"requests", "limits"}
    assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert "/tmp" in mounts, "a writable /tmp on a read-only root"


def test_only_prometheus_reaches_the_metrics_port() -> None:
    policy = one("NetworkPolicy")["spec"]
    assert policy["podSelector"] == one("StatefulSet")["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    assert rule["from"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
            "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
        }
    ]
