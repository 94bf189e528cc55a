"""The Databricks Asset Bundle: jobs valid for the Jobs API, wheel tasks that really run.

Checked against databricks-sdk's `JobSettings` model (what `bundle deploy` sends to
/api/2.1/jobs/create), against the built wheel's metadata, and by calling the entry point
from the installed wheel the way a `python_wheel_task` does: argv = parameters.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from databricks.sdk.service.jobs import JobSettings

from tests.conftest import MockServer
from tests.deploy.conftest import copy_sources
from tests.deploy.queries import ROOT
from workers.settings import load_settings
from workers.settings_help import known_variables

BUNDLE = ROOT / "deploy" / "databricks" / "databricks.yml"
_VAR = re.compile(r"\$\{(?:var\.(\w+)|workspace\.(host|file_path))\}")
WORKSPACE = {
    "host": "https://adb-1234567890.12.azuredatabricks.net",
    "file_path": "/Workspace/Users/sp/.bundle/pidelta/prod/files",
}
WORKSPACE_HOST = WORKSPACE["host"]
SECRET = re.compile(r"^\{\{secrets/pidelta/[\w-]+\}\}$")

# What the wheel task does: look the entry point up in the installed wheel's metadata,
# put the task parameters in sys.argv and call it.
WHEEL_TASK = """
import importlib.metadata, json, sys
package, entry, params = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
dist = importlib.metadata.distribution(package)
(ep,) = [e for e in dist.entry_points if e.group == "console_scripts" and e.name == entry]
sys.argv = [entry, *params]
try:
    outcome = ("RETURNED", ep.load()())
except SystemExit as exc:
    outcome = ("EXIT", exc.code)
sys.stdout.flush()
print(*outcome)
"""


def resolve(node: Any, variables: dict[str, str]) -> Any:
    """Substitute ${var.x} the way `databricks bundle` does, with the defaults."""
    if isinstance(node, dict):
        return {k: resolve(v, variables) for k, v in node.items()}
    if isinstance(node, list):
        return [resolve(v, variables) for v in node]
    if isinstance(node, str):
        return _VAR.sub(
            lambda m: variables[m.group(1)] if m.group(1) else WORKSPACE[m.group(2)], node
        )
    return node


@pytest.fixture(scope="module")
def bundle() -> dict[str, Any]:
    raw = yaml.safe_load(BUNDLE.read_text())
    variables = {k: str(v["default"]) for k, v in raw["variables"].items()}
    resolved = resolve(raw, variables)
    assert "${" not in yaml.safe_dump(resolved["targets"])
    return resolved


@pytest.fixture(scope="module")
def jobs(bundle: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The jobs of the production targets, by name."""
    targets = bundle["targets"]
    return {**targets["prod"]["resources"]["jobs"], **targets["prod-stream"]["resources"]["jobs"]}


def test_one_job_per_target(bundle: dict[str, Any]) -> None:
    """Deploying a target never schedules the batch and the continuous job together: both
    would run the same shards."""
    assert "resources" not in bundle
    per_target = {name: list(t["resources"]["jobs"]) for name, t in bundle["targets"].items()}
    assert per_target == {
        "dev": ["pidelta_batch"],
        "prod": ["pidelta_batch"],
        "prod-stream": ["pidelta_stream"],
        "prod-kerberos": ["pidelta_batch"],
    }
    assert bundle["targets"]["dev"]["mode"] == "development"  # schedule paused
    assert bundle["targets"]["dev"]["resources"] == bundle["targets"]["prod"]["resources"]


def test_the_unity_catalog_target_is_wired_from_the_workspace_and_the_scope(
    jobs: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets = {"pi-username": "svc", "pi-password": "pw", "databricks-client-id": "sp-id"}
    secrets["databricks-client-secret"] = "sp-secret"
    for name, job in jobs.items():
        (cluster,) = job["job_clusters"]
        env = cluster["new_cluster"]["spark_env_vars"]
        assert env["PIDELTA_TARGET"].startswith("uc://"), name
        assert env["DATABRICKS_HOST"] == WORKSPACE_HOST, name
        assert env["PIDELTA_UC_STORAGE_ROOT"].startswith("s3://"), name
        for key in ("DATABRICKS_CLIENT_ID", "DATABRICKS_CLIENT_SECRET"):
            assert SECRET.match(env[key]), f"{name}: {key} must come from a secret scope"
        for key in [k for k in os.environ if k.startswith(("PIDELTA_", "DATABRICKS_"))]:
            monkeypatch.delenv(key)
        for key, value in env.items():
            filled = re.sub(r"\{\{secrets/pidelta/([\w-]+)\}\}", lambda m: secrets[m[1]], value)
            monkeypatch.setenv(key, filled)
        settings = load_settings()  # the settings a task starts with: valid for uc://
        assert settings.databricks_host == WORKSPACE_HOST
        assert settings.uc_storage_root == env["PIDELTA_UC_STORAGE_ROOT"]


def wheel_tasks(jobs: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [t["python_wheel_task"] for job in jobs.values() for t in job["tasks"]]


def build_bundle_wheel(bundle: dict[str, Any], to: Path, **env: str) -> Path:
    """The wheel the bundle's own build command makes, run in a copy of the repository
    with this interpreter's tools first on PATH (as a deploying machine's venv would be)."""
    (artifact,) = bundle["artifacts"].values()
    src = copy_sources(to)
    script = BUNDLE.parent / "build_wheel.py"
    (src / "deploy" / "databricks").mkdir(parents=True)
    shutil.copy2(script, src / "deploy" / "databricks" / script.name)
    base = {k: v for k, v in os.environ.items() if k != "PIDELTA_PURE_WHEEL"}
    path = f"{Path(sys.executable).parent}{os.pathsep}{base.get('PATH', '')}"
    subprocess.run(
        ["sh", "-c", artifact["build"]],
        cwd=src,
        env={**base, "PATH": path, **env},
        check=True,
        capture_output=True,
        timeout=300,
    )
    (built,) = (src / "dist").glob("pidelta-*.whl")
    return built


def test_bundle_builds_the_wheel_from_the_repository(
    bundle: dict[str, Any], jobs: dict[str, dict[str, Any]]
) -> None:
    (artifact,) = bundle["artifacts"].values()
    assert artifact["type"] == "whl"
    assert (BUNDLE.parent / artifact["path"] / "pyproject.toml").is_file()
    for job in jobs.values():
        for task in job["tasks"]:
            assert task["libraries"] == [{"whl": "../../dist/*.whl"}]


@pytest.fixture(scope="module")
def bundle_wheel(bundle: dict[str, Any], deploy_tmp: Path) -> Path:
    return build_bundle_wheel(bundle, deploy_tmp / "bundle-native")


def test_the_bundle_wheel_carries_the_c_reader_for_linux_x86_64_clusters(
    bundle_wheel: Path,
) -> None:
    """Built on Linux x86_64: the reader against the stable ABI, retagged manylinux, so
    DBR 15.4 (CPython 3.11) and 16 (3.12) clusters load the same wheel."""
    assert bundle_wheel.name == (
        "pidelta-0.1.0-cp311-abi3-manylinux2014_x86_64.manylinux_2_17_x86_64.whl"
    )
    with zipfile.ZipFile(bundle_wheel) as zf:
        reader = sorted(n for n in zf.namelist() if n.startswith("workers/timeseries/_pijson"))
    assert reader == ["workers/timeseries/_pijson.abi3.so", "workers/timeseries/_pijson.c"]


def test_the_bundle_wheel_is_pure_python_when_asked(
    bundle: dict[str, Any], deploy_tmp: Path
) -> None:
    """For ARM node types (or a build machine that cannot): no C reader, any platform."""
    wheel = build_bundle_wheel(bundle, deploy_tmp / "bundle-pure", PIDELTA_PURE_WHEEL="1")
    assert wheel.name == "pidelta-0.1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        assert [n for n in zf.namelist() if n.startswith("workers/timeseries/_pijson")] == []


def test_jobs_round_trip_through_the_jobs_api_model(jobs: dict[str, dict[str, Any]]) -> None:
    assert set(jobs) == {"pidelta_batch", "pidelta_stream"}
    for name, job in jobs.items():
        assert JobSettings.from_dict(job).as_dict() == job, f"{name} has fields the API drops"


def test_batch_job_is_scheduled_and_stream_job_is_continuous(
    jobs: dict[str, dict[str, Any]],
) -> None:
    batch, stream = (
        JobSettings.from_dict(jobs["pidelta_batch"]),
        JobSettings.from_dict(jobs["pidelta_stream"]),
    )
    assert batch.schedule is not None
    assert batch.continuous is None
    assert batch.schedule.quartz_cron_expression.split()[0] == "0"
    assert batch.schedule.pause_status is not None
    assert batch.schedule.pause_status.value == "UNPAUSED"
    assert stream.continuous is not None
    assert stream.schedule is None
    assert stream.continuous.pause_status is not None
    assert stream.continuous.pause_status.value == "UNPAUSED"
    for job in (batch, stream):
        assert job.max_concurrent_runs == 1, "two runs of one shard would share an app id"
    commands = {
        name: {t["python_wheel_task"]["parameters"][-1] for t in j["tasks"]}
        for name, j in jobs.items()
    }
    assert commands == {"pidelta_batch": {"once"}, "pidelta_stream": {"run"}}


def test_one_task_per_shard_with_flags_before_the_command(
    jobs: dict[str, dict[str, Any]],
) -> None:
    for name, job in jobs.items():
        shards: list[int] = []
        ports: list[str] = []
        for task in job["tasks"]:
            params = task["python_wheel_task"]["parameters"]
            flags = dict(zip(params[:-1:2], params[1:-1:2], strict=True))
            assert set(flags) == {"--shard-index", "--shard-count", "--metrics-port"}, name
            assert int(flags["--shard-count"]) == len(job["tasks"]), name
            assert task["task_key"] == f"shard_{flags['--shard-index']}"
            shards.append(int(flags["--shard-index"]))
            ports.append(flags["--metrics-port"])
        assert sorted(shards) == list(range(len(job["tasks"]))), name
        assert len(set(ports)) == len(ports), f"{name}: tasks share one cluster, so one port each"


def test_environment_is_settings_and_secrets_come_from_the_scope(
    jobs: dict[str, dict[str, Any]],
) -> None:
    fields = known_variables()
    for name, job in jobs.items():
        for cluster in job["job_clusters"]:
            env = cluster["new_cluster"]["spark_env_vars"]
            assert set(env) <= fields, name
            for key in ("PIDELTA_PI_USERNAME", "PIDELTA_PI_PASSWORD"):
                assert SECRET.match(env[key]), f"{name}: {key} must come from a secret scope"
            assert {k for k, v in env.items() if v.startswith("{{secrets/")} == {
                "PIDELTA_PI_USERNAME",
                "PIDELTA_PI_PASSWORD",
                "DATABRICKS_CLIENT_ID",
                "DATABRICKS_CLIENT_SECRET",
            }


def test_tasks_name_the_wheel_package_and_its_console_script(
    jobs: dict[str, dict[str, Any]], bundle_wheel: Path
) -> None:
    with zipfile.ZipFile(bundle_wheel) as zf:
        (meta,) = [n for n in zf.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points = zf.read(meta).decode()
    scripts = entry_points.split("[console_scripts]", 1)[1].split("\n[", 1)[0]
    names = {line.split("=")[0].strip() for line in scripts.splitlines() if "=" in line}
    for task in wheel_tasks(jobs):
        assert task["package_name"] == "pidelta"
        assert task["entry_point"] in names


@dataclass(frozen=True)
class WheelRun:
    """How the entry point ended: `raised` is SystemExit, else it returned `code`."""

    code: int
    raised: bool
    out: str
    err: str


def call_wheel_task(
    venv: Path, task: dict[str, Any], params: list[str], env: dict[str, str] | None = None
) -> WheelRun:
    """Run the harness in the wheel's venv."""
    result = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            WHEEL_TASK,
            task["package_name"],
            task["entry_point"],
            json.dumps(params),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=venv.parent,
        # Set on every Databricks cluster: `pidelta` then exits as the runtime expects.
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(venv.parent),
            "DATABRICKS_RUNTIME_VERSION": "15.4",
            **(env or {}),
        },
    )
    assert result.stdout, result.stderr
    *out, last = result.stdout.splitlines()
    how, _, value = last.partition(" ")
    assert how in {"EXIT", "RETURNED"}, result.stdout + result.stderr
    code = 0 if value == "None" else int(value)
    return WheelRun(code, how == "EXIT", "\n".join(out), result.stderr)


def test_entry_point_parses_every_task_parameter_list(
    jobs: dict[str, dict[str, Any]], wheel_venv: Path
) -> None:
    """`<parameters> --help`: argparse reaches the command's help only if the flags parsed."""
    for task in wheel_tasks(jobs):
        params = task["parameters"]
        run = call_wheel_task(wheel_venv, task, [*params, "--help"])
        assert run.code == 0, params
        assert run.out.splitlines()[0].startswith(f"usage: pidelta {params[-1]}")


def test_batch_task_catches_up_its_shard_with_secrets_from_the_scope(
    jobs: dict[str, dict[str, Any]],
    wheel_venv: Path,
    tmp_path: Path,
    mock_pi_factory: Callable[..., MockServer],
) -> None:
    """shard_0 of the batch job, env from spark_env_vars with the secret references filled in.

    Only what names real infrastructure is replaced: the PI URL (a basic-auth mock-pi)
    and the target (a folder instead of Unity Catalog); the start is shortened.
    """
    secrets = {
        "pi-username": "pidelta-svc",
        "pi-password": "s3cret-from-scope",
        "databricks-client-id": "sp-id",
        "databricks-client-secret": "sp-secret",
    }
    mock = mock_pi_factory(
        tag_count=20, auth="basic", username=secrets["pi-username"], password=secrets["pi-password"]
    )
    job = jobs["pidelta_batch"]
    (cluster,) = job["job_clusters"]
    env = {
        key: re.sub(r"\{\{secrets/pidelta/([\w-]+)\}\}", lambda m: secrets[m.group(1)], value)
        for key, value in cluster["new_cluster"]["spark_env_vars"].items()
    }
    env |= {
        "PIDELTA_PI_URL": mock.url,
        "PIDELTA_TARGET": str(tmp_path / "pi"),
        "PIDELTA_START": "*-5m",
    }
    task = next(t for t in job["tasks"] if t["task_key"] == "shard_0")["python_wheel_task"]
    run = call_wheel_task(wheel_venv, task, task["parameters"], env)
    assert run.code == 0, run.err
    assert (tmp_path / "pi" / "pi_timeseries" / "_delta_log").is_dir()
    assert "pidelta-ts-0-of-4" in run.err
    assert secrets["pi-password"] not in run.out + run.err


def test_a_failing_task_fails_the_run(jobs: dict[str, dict[str, Any]], wheel_venv: Path) -> None:
    """A shard index beyond the count is exit code 2, and must reach Databricks as such."""
    task = jobs["pidelta_batch"]["tasks"][0]["python_wheel_task"]
    params = ["--shard-index", "9", *task["parameters"][2:]]
    run = call_wheel_task(wheel_venv, task, params)
    assert run.code == 2, run.err
    assert run.raised, "main() returned 2 instead of raising SystemExit(2)"
