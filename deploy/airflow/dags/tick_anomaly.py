"""Airflow DAGs of the pipeline: file-drop ingestion and the daily retrain.

They only schedule the project's own commands (no logic here):

- ``tick_anomaly_ingest`` every 10 minutes: ``python -m models watch --once`` validates the
  CSV files dropped into the incoming folder, publishes them to InfluxDB and appends them
  to the training store (docs/models.md, "File-drop ingestion").
- ``tick_anomaly_retrain`` daily: the same ingestion first, then ``python -m models
  retrain``, which trains a challenger on the labelled window of InfluxDB and promotes it
  only when it beats the champion. Its exit status 3 ("kept: the new version is the
  challenger") marks the task *skipped*, not failed; 1 and 2 fail it.

Everything else comes from the environment of the Airflow worker (compose service
``airflow``, docs/operations.md): ``TICK_PROFILE`` (default creditcard), ``TICK_PYTHON``
(the project's interpreter, default ``python``), ``TICK_RETRAIN_SINCE`` (default 7d),
``TICK_RETRAIN_ARGS`` (more retrain flags), ``TICK_WATCH_ARGS``, ``TICK_INGEST_SCHEDULE``,
``TICK_RETRAIN_SCHEDULE``, and the commands' own ``MODELS_*`` variables (InfluxDB URL and
credentials, registry, data and runs folders).
"""

from __future__ import annotations

import datetime as dt
import os

try:  # Airflow 3
    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG
except ImportError:  # Airflow 2.x
    from airflow import DAG
    from airflow.operators.bash import BashOperator

INGEST_SCHEDULE = os.environ.get("TICK_INGEST_SCHEDULE", "*/10 * * * *")
RETRAIN_SCHEDULE = os.environ.get("TICK_RETRAIN_SCHEDULE", "0 3 * * *")
START = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
#: exit status of `models retrain` when the champion stays (the task is then skipped)
RETRAIN_KEPT = 3

PYTHON = '"${TICK_PYTHON:-python}"'
PROFILE = '--profile "${TICK_PROFILE:-creditcard}"'
WATCH = f"{PYTHON} -m models watch {PROFILE} --once --lock-wait 900 ${{TICK_WATCH_ARGS:-}}"
RETRAIN = (
    f'{PYTHON} -m models retrain {PROFILE} --since "${{TICK_RETRAIN_SINCE:-7d}}" '
    "${TICK_RETRAIN_ARGS:-}"
)

DEFAULT_ARGS = {
    "owner": "tick-anomaly",
    "retries": 1,
    "retry_delay": dt.timedelta(minutes=10),
}

with DAG(
    dag_id="tick_anomaly_ingest",
    description="CSV files dropped into the incoming folder: validate, publish, store",
    schedule=INGEST_SCHEDULE,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["tick-anomaly"],
):
    BashOperator(
        task_id="watch_once",
        bash_command=WATCH,
        execution_timeout=dt.timedelta(minutes=30),
    )

with DAG(
    dag_id="tick_anomaly_retrain",
    description="Ingest dropped files, then retrain: promote the challenger only if it wins",
    schedule=RETRAIN_SCHEDULE,
    start_date=START,
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["tick-anomaly"],
):
    ingest = BashOperator(
        task_id="watch_once",
        bash_command=WATCH,
        execution_timeout=dt.timedelta(minutes=30),
    )
    retrain = BashOperator(
        task_id="retrain",
        bash_command=RETRAIN,
        skip_on_exit_code=RETRAIN_KEPT,
        execution_timeout=dt.timedelta(hours=3),
    )
    ingest >> retrain
