"""The Airflow DAGs (deploy/airflow/dags) loaded by Airflow's own DagBag, in the isolated
virtualenv .ci/run creates (/opt/airflow-venv; TICK_AIRFLOW_PYTHON elsewhere): no import
errors, the expected DAGs, tasks, order and schedules, and every command they run parses
with the project's own command line."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
from conftest import require

from models.__main__ import build_parser
from models.retrain import EXIT_KEPT

ROOT = Path(__file__).resolve().parents[1]
DAGS = ROOT / "deploy" / "airflow" / "dags"
AIRFLOW_PYTHON = Path(os.environ.get("TICK_AIRFLOW_PYTHON", "/opt/airflow-venv/bin/python"))

#: the loading tests start Airflow's interpreter: its imports take seconds
slow = pytest.mark.slow

_LOAD = r"""
import json, sys
from airflow.dag_processing.dagbag import DagBag

def load(folder):
    bag = DagBag(dag_folder=folder)
    dags = {}
    for dag_id, dag in bag.dags.items():
        dags[dag_id] = {
            "schedule": str(dag.schedule),
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "tasks": {
                t.task_id: {
                    "downstream": sorted(t.downstream_task_ids),
                    "bash_command": t.bash_command,
                    "skip_on_exit_code": sorted(t.skip_on_exit_code or []),
                    "retries": t.retries,
                }
                for t in dag.tasks
            },
        }
    return {"import_errors": {str(k): str(v) for k, v in bag.import_errors.items()}, "dags": dags}

print(json.dumps({"ours": load(sys.argv[1]), "broken": load(sys.argv[2])}))
"""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory) -> dict:
    require(AIRFLOW_PYTHON.is_file(), f"Airflow's virtualenv ({AIRFLOW_PYTHON}, made by .ci/run)")
    home = tmp_path_factory.mktemp("airflow-home")
    broken = tmp_path_factory.mktemp("broken-dags")
    (broken / "broken.py").write_text(
        "from airflow.sdk import DAG\nwith DAG(dag_id='x', schedule='@daily'):\n    undefined_name\n"
    )
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    }
    result = subprocess.run(
        [str(AIRFLOW_PYTHON), "-c", _LOAD, str(DAGS), str(broken)],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@slow
def test_the_dags_load_without_import_errors(loaded):
    assert loaded["ours"]["import_errors"] == {}
    assert set(loaded["ours"]["dags"]) == {"tick_anomaly_ingest", "tick_anomaly_retrain"}
    # the check can fail: a broken DAG file is reported as such
    (error,) = loaded["broken"]["import_errors"].values()
    assert "undefined_name" in error


@slow
def test_tasks_order_and_schedules(loaded):
    dags = loaded["ours"]["dags"]
    ingest, retrain = dags["tick_anomaly_ingest"], dags["tick_anomaly_retrain"]
    assert ingest["schedule"] == "*/10 * * * *"
    assert retrain["schedule"] == "0 3 * * *"
    for dag in (ingest, retrain):
        assert dag["catchup"] is False and dag["max_active_runs"] == 1
    assert set(ingest["tasks"]) == {"watch_once"}
    assert set(retrain["tasks"]) == {"watch_once", "retrain"}
    assert retrain["tasks"]["watch_once"]["downstream"] == ["retrain"]
    # "kept" (the challenger stays a challenger) skips the task instead of failing it
    assert retrain["tasks"]["retrain"]["skip_on_exit_code"] == [EXIT_KEPT]


def _argv(command: str) -> list[str]:
    """The command's arguments as bash expands them with no TICK_* variable set."""
    out = subprocess.run(
        ["bash", "-c", f"set -- {command}; printf '%s\\0' \"$@\""],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split("\0")[:-1]


@slow
def test_every_command_is_the_projects_own(loaded):
    parser = build_parser()
    seen = set()
    for dag in loaded["ours"]["dags"].values():
        for task in dag["tasks"].values():
            argv = _argv(task["bash_command"])
            assert argv[:3] == ["python", "-m", "models"], shlex.join(argv)
            args = parser.parse_args(argv[3:])  # exits (fails the test) on an unknown flag
            seen.add(args.command)
            assert args.profile == "creditcard"
            if args.command == "watch":
                assert args.once and args.lock_wait > 0
            else:
                assert args.since == "7d"
    assert seen == {"watch", "retrain"}


def test_one_airflow_version_everywhere():
    """CI's virtualenv, the image and the constraints file install the same Airflow."""
    import re

    ci = (ROOT / ".ci" / "run").read_text()
    dockerfile = (ROOT / "compose" / "images" / "python.Dockerfile").read_text()
    constraints = (DAGS.parent / "constraints.txt").read_text()
    (in_ci,) = re.findall(r'"apache-airflow==([\d.]+)"', ci)
    (in_image,) = re.findall(r"^ARG AIRFLOW_VERSION=([\d.]+)$", dockerfile, re.M)
    (pinned,) = re.findall(r"^apache-airflow==([\d.]+)$", constraints, re.M)
    assert in_ci == in_image == pinned
    assert "-c deploy/airflow/constraints.txt" in ci
    # every line a pin: nothing left to the resolver
    lines = [x for x in constraints.splitlines() if x and not x.startswith("#")]
    assert lines and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.+!-]+", x) for x in lines)
