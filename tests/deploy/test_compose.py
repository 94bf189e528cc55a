"""deploy/compose/compose.yaml is wired consistently (no Docker engine runs here)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from mock_pi.settings import MockSettings
from tests.deploy.queries import ROOT
from workers.settings import Settings

COMPOSE = ROOT / "deploy" / "compose" / "compose.yaml"
PIDELTA_IMAGE = "pidelta:local"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def workers(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in services.items() if s.get("command") == ["run"]}


def test_the_demo_has_mock_pi_workers_prometheus_and_grafana(
    services: dict[str, dict[str, Any]],
) -> None:
    assert set(services) == {"mock-pi", "worker-0", "worker-1", "worker-2", "prometheus", "grafana"}
    for name, service in services.items():
        assert "image" in service or "build" in service, name
    for name in ["mock-pi", *workers(services)]:
        service = services[name]
        assert service["image"] == PIDELTA_IMAGE
        assert service["build"] == {"context": "../..", "dockerfile": "Dockerfile"}
        assert (COMPOSE.parent / service["build"]["context"] / "Dockerfile").is_file()
    assert services["mock-pi"]["entrypoint"] == ["mock-pi"]


def test_published_host_ports_are_unique(services: dict[str, dict[str, Any]]) -> None:
    host_ports = [p.split(":")[0] for s in services.values() for p in s.get("ports", [])]
    assert len(host_ports) == len(set(host_ports)), host_ports


def test_environment_names_are_real_settings(services: dict[str, dict[str, Any]]) -> None:
    pidelta = {f"PIDELTA_{n.upper()}" for n in Settings.model_fields}
    mock = {f"MOCK_PI_{n.upper()}" for n in MockSettings.model_fields}
    for name, service in services.items():
        for key in service.get("environment", {}):
            if service.get("image") == PIDELTA_IMAGE:
                assert key in pidelta | mock, f"{name}: {key} is not a setting"
            else:
                assert not key.startswith(("PIDELTA_", "MOCK_PI_")), f"{name}: {key}"


def test_workers_cover_shards_0_to_n_minus_1_and_validate(
    services: dict[str, dict[str, Any]],
) -> None:
    envs = [s["environment"] for s in workers(services).values()]
    counts = {int(e["PIDELTA_SHARD_COUNT"]) for e in envs}
    assert counts == {len(envs)}
    assert sorted(int(e["PIDELTA_SHARD_INDEX"]) for e in envs) == list(range(len(envs)))
    for env in envs:
        settings = Settings(**{k.removeprefix("PIDELTA_").lower(): v for k, v in env.items()})
        assert settings.pi_url == "http://mock-pi:8440/piwebapi"
        assert settings.target.startswith("/data/")
    mock = services["mock-pi"]["environment"]
    assert MockSettings(**{k.removeprefix("MOCK_PI_").lower(): v for k, v in mock.items()})
    assert mock["MOCK_PI_HOST"] == "0.0.0.0"
    assert f"{mock['MOCK_PI_PORT']}:{mock['MOCK_PI_PORT']}" in services["mock-pi"]["ports"]


def test_workers_share_one_lakehouse_and_stop_gracefully(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, service in workers(services).items():
        assert service["volumes"] == ["lakehouse:/data"], name
        assert service["stop_grace_period"] == "30s", name
        assert service["depends_on"]["mock-pi"]["condition"] == "service_healthy"
        port = service["environment"]["PIDELTA_METRICS_PORT"]
        assert all(p.endswith(f":{port}") for p in service["ports"]), name
    assert "healthcheck" in services["mock-pi"], "the image HEALTHCHECK is the worker's"


def test_every_mounted_host_path_exists(services: dict[str, dict[str, Any]]) -> None:
    named = set(yaml.safe_load(COMPOSE.read_text())["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source in named:
                continue
            assert source.startswith("."), f"{name}: {volume}"
            assert (COMPOSE.parent / source).exists(), f"{name}: {source} is not in the repo"


def test_prometheus_and_grafana_mount_the_repo_configuration(
    services: dict[str, dict[str, Any]],
) -> None:
    prom = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    assert prom["../prometheus/prometheus.yml"] == "/etc/prometheus/prometheus.yml"
    assert prom["../prometheus/rules"] == "/etc/prometheus/rules"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    graf = dict(v.split(":")[:2] for v in services["grafana"]["volumes"])
    assert graf["../grafana/provisioning"] == "/etc/grafana/provisioning"
    assert graf["../grafana/dashboards"] == "/var/lib/grafana/dashboards"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "deploy/grafana/dashboards" / home.rsplit("/", 1)[1]).is_file()
