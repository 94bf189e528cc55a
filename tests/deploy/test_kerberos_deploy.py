"""Kerberos in the deployment: the image's libraries, the Kubernetes overlay that mounts
krb5.conf and the keytab read-only, and the Databricks target taking the keytab from the
secret scope."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.queries import ROOT
from tests.deploy.test_databricks import BUNDLE, SECRET, WORKSPACE, resolve
from tests.deploy.test_dockerfile import final_stage, instructions
from tests.deploy.test_k8s import KUBERNETES_VERSION, resources
from workers.settings import Settings

OVERLAY = ROOT / "deploy" / "k8s-kerberos"
OVERLAY_FILES = (
    "kustomization.yaml",
    "krb5-configmap.yaml",
    "configmap-patch.yaml",
    "statefulset-patch.yaml",
)
# An MIT keytab as `ktutil` writes it (version 0x0502, then entries).
KEYTAB = base64.b64encode(b"\x05\x02" + bytes(60)).decode()


def test_the_image_builds_gssapi_and_carries_only_the_runtime_library() -> None:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    builder = " ".join(a for k, a in steps[:last_from] if k == "RUN")
    assert "libkrb5-dev" in builder
    assert "pip wheel --no-cache-dir --wheel-dir /wheels '.[kerberos]'" in builder
    final = " ".join(a for k, a in final_stage() if k == "RUN")
    assert "apt-get install -y --no-install-recommends libgssapi-krb5-2" in final
    assert "/wheels/gssapi-*.whl" in final
    assert "libkrb5-dev" not in final
    assert "gcc" not in final
    assert dict(final_stage())["USER"] == "10001:10001"


def overlay_docs() -> dict[str, Any]:
    return {name: yaml.safe_load((OVERLAY / name).read_text()) for name in OVERLAY_FILES}


def rendered() -> list[dict[str, Any]]:
    """The base with the overlay's patches applied (strategic merge of these shapes)."""
    docs = copy.deepcopy(resources())
    overlay = overlay_docs()
    kustomization = overlay["kustomization.yaml"]
    assert kustomization["resources"] == ["../k8s", "krb5-configmap.yaml"]
    assert [p["path"] for p in kustomization["patches"]] == [
        "configmap-patch.yaml",
        "statefulset-patch.yaml",
    ]
    by_kind = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    config = by_kind[("ConfigMap", "pidelta")]
    config["data"].update(overlay["configmap-patch.yaml"]["data"])
    pod = by_kind[("StatefulSet", "pidelta")]["spec"]["template"]["spec"]
    patch = overlay["statefulset-patch.yaml"]["spec"]["template"]["spec"]
    (patch_container,) = patch["containers"]
    (container,) = [c for c in pod["containers"] if c["name"] == patch_container["name"]]
    container["volumeMounts"].extend(patch_container["volumeMounts"])
    pod["volumes"].extend(patch["volumes"])
    return [*docs, overlay["krb5-configmap.yaml"]]


def pidelta_config(docs: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pidelta"]
    return dict(config["data"])


@pytest.mark.parametrize("kind", ["StatefulSet", "ConfigMap"])
def test_the_overlay_is_schema_valid(kind: str) -> None:
    for doc in rendered():
        if doc["kind"] == kind:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_krb5_conf_and_the_keytab_are_mounted_read_only() -> None:
    docs = rendered()
    (statefulset,) = [d for d in docs if d["kind"] == "StatefulSet"]
    pod = statefulset["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert mounts["keytab"] == {
        "name": "keytab",
        "mountPath": "/etc/pidelta/keytab",
        "readOnly": True,
    }
    assert mounts["krb5-conf"] == {"name": "krb5-conf", "mountPath": "/etc/krb5", "readOnly": True}
    assert volumes["keytab"]["secret"] == {"secretName": "pidelta-keytab", "defaultMode": 0o440}
    assert pod["securityContext"]["fsGroup"] == 10001, "the group that may read the keytab"
    (krb5,) = [
        d for d in docs if d["metadata"]["name"] == volumes["krb5-conf"]["configMap"]["name"]
    ]
    assert set(krb5["data"]) == {"krb5.conf"}
    config = next(
        d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "pidelta"
    )
    data = config["data"]
    assert data["KRB5_CONFIG"] == "/etc/krb5/krb5.conf"
    assert data["PIDELTA_PI_KEYTAB"] == "/etc/pidelta/keytab/pidelta.keytab"
    # The keytab Secret is created out of band: the overlay ships no secret value.
    assert not any(
        d["kind"] == "Secret" and d["metadata"]["name"] == "pidelta-keytab" for d in docs
    )
    assert (
        "kubectl -n pidelta create secret generic pidelta-keytab"
        in (OVERLAY / "kustomization.yaml").read_text()
    )


def test_the_overlay_configuration_validates(tmp_path: Path) -> None:
    keytab = tmp_path / "pidelta.keytab"
    keytab.write_bytes(base64.b64decode(KEYTAB))
    krb5 = tmp_path / "krb5.conf"
    krb5.write_text(overlay_docs()["krb5-configmap.yaml"]["data"]["krb5.conf"])
    data = pidelta_config(rendered())
    values = {k.removeprefix("PIDELTA_").lower(): v for k, v in data.items()}
    values.update(pi_keytab=keytab, krb5_config=krb5)
    settings = Settings(**values)
    assert (settings.pi_auth, settings.pi_principal) == (
        "kerberos",
        "svc-pidelta@PLANT.EXAMPLE.COM",
    )


def test_the_databricks_target_takes_the_keytab_from_the_secret_scope() -> None:
    raw = yaml.safe_load(BUNDLE.read_text())
    variables = {k: str(v["default"]) for k, v in raw["variables"].items()}
    bundle = resolve(raw, variables)
    target = bundle["targets"]["prod-kerberos"]["resources"]["jobs"]
    prod = bundle["targets"]["prod"]["resources"]["jobs"]
    assert set(target) == set(prod) == {"pidelta_batch"}
    for name, job in target.items():
        assert job["tasks"] == prod[name]["tasks"]
        (cluster,) = job["job_clusters"]
        env = cluster["new_cluster"]["spark_env_vars"]
        assert SECRET.match(env["PIDELTA_PI_KEYTAB_BASE64"]), name
        assert env["KRB5_CONFIG"] == f"{WORKSPACE['file_path']}/krb5.conf"
        (script,) = cluster["new_cluster"]["init_scripts"]
        assert script["workspace"]["destination"] == f"{WORKSPACE['file_path']}/kerberos-init.sh"
        filled = {k: v for k, v in env.items() if k.startswith("PIDELTA_")}
        filled["PIDELTA_PI_KEYTAB_BASE64"] = KEYTAB
        filled["PIDELTA_TARGET"] = "./lakehouse"  # uc:// would need a workspace too
        settings = Settings(**{k.removeprefix("PIDELTA_").lower(): v for k, v in filled.items()})
        assert settings.pi_auth == "kerberos"
    here = BUNDLE.parent
    assert "[realms]" in (here / "krb5.conf").read_text()
    assert "pip install --quiet 'gssapi>=1.8'" in (here / "kerberos-init.sh").read_text()
