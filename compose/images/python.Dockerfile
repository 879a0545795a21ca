# syntax=docker/dockerfile:1
# One multi-stage, multi-target image definition for every Python service of the stack.
#   target "runtime", EXTRAS=""     -> api, publisher, alert-sink
#   target "runtime", EXTRAS="tf"   -> udf-agent, model-bootstrap (TensorFlow, TF Serving client)
#   target "jupyter", EXTRAS="tf,dev" -> jupyter
#   target "airflow", EXTRAS=""     -> airflow (Apache Airflow in its own virtualenv, beside
#                                      the project's, scheduling the project's commands)
# The builder stage builds the project wheel and a virtualenv; runtime stages copy only the
# virtualenv, run as a fixed non-root UID/GID (10001) and own the shared mount points so named
# volumes are created with that ownership.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY pyproject.toml README.md ./
COPY models ./models
COPY udf_agent ./udf_agent
COPY publisher ./publisher
COPY alert_sink ./alert_sink
COPY api ./api
COPY demo ./demo
ARG EXTRAS=""
# The TensorFlow that exports SavedModels (model-bootstrap, jupyter) and the TF Serving
# client are the version the tfserving service runs: TF Serving reads SavedModels of its
# own version or older. Keep equal to the tensorflow/serving tag in docker-compose.yml.
ARG TF_VERSION=2.20.0
# pinned like every other input of the image (hadolint DL3013)
ARG PIP_VERSION=26.3
# DL3013 flags "$wheel": the project's own wheel, built from this context just above; its
# dependencies are ranges on purpose (pyproject.toml), TensorFlow is pinned by -c.
# hadolint ignore=DL3013
RUN pip install "pip==${PIP_VERSION}" \
 && pip wheel --no-deps --wheel-dir /wheels . \
 && wheel="$(ls /wheels/*.whl)" \
 && printf 'tensorflow==%s\ntensorflow-serving-api==%s\n' "$TF_VERSION" "$TF_VERSION" > /tmp/tf.txt \
 && if [ -n "$EXTRAS" ]; then pip install -c /tmp/tf.txt "${wheel}[${EXTRAS}]"; else pip install "$wheel"; fi

FROM builder AS jupyter-builder
ARG JUPYTERLAB_VERSION=4.3.5
RUN pip install "jupyterlab==${JUPYTERLAB_VERSION}"

# Apache Airflow pins its own dependencies (SQLAlchemy, pydantic...): a virtualenv of its
# own, with the versions CI loads the DAGs with (deploy/airflow/constraints.txt)
FROM ${PYTHON_IMAGE} AS airflow-builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
ARG PIP_VERSION=26.3
ARG AIRFLOW_VERSION=3.3.2
COPY deploy/airflow/constraints.txt /tmp/airflow-constraints.txt
RUN python -m venv /opt/airflow \
 && /opt/airflow/bin/pip install "pip==${PIP_VERSION}" \
 && /opt/airflow/bin/pip install -c /tmp/airflow-constraints.txt "apache-airflow==${AIRFLOW_VERSION}"

FROM ${PYTHON_IMAGE} AS base
ARG APP_UID=10001
ARG APP_GID=10001
# ENV, not only ARG: the runtime stages below name the user numerically from these
ENV APP_UID=${APP_UID} \
    APP_GID=${APP_GID} \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONSAFEPATH=1 \
    MODELS_REGISTRY=/app/models/registry \
    TICK_PROFILES_DIR=/app/profiles
RUN groupadd --system --gid "${APP_GID}" app \
 && useradd --system --uid "${APP_UID}" --gid app --home-dir /app --shell /usr/sbin/nologin app \
 && mkdir -p /app/data /app/models/registry /app/models/serving /app/spool /var/run/tick-anomaly \
 && chown -R app:app /app \
 # setgid directory: the socket keeps group "app", which Kapacitor joins (group_add)
 && chown app:app /var/run/tick-anomaly && chmod 2770 /var/run/tick-anomaly
# the data-set profiles (--profile NAME); the default, creditcard, is read on every start
COPY profiles /app/profiles
COPY compose/scripts/healthcheck.py /usr/local/bin/tick-healthcheck
COPY compose/scripts/model_bootstrap.sh /usr/local/bin/model-bootstrap
RUN chmod 0755 /usr/local/bin/tick-healthcheck /usr/local/bin/model-bootstrap
WORKDIR /app

FROM base AS runtime
COPY --from=builder /opt/venv /opt/venv
# numeric, so Kubernetes' runAsNonRoot can verify it without a runAsUser
USER ${APP_UID}:${APP_GID}
CMD ["python", "-m", "udf_agent", "--help"]

FROM base AS jupyter
COPY --from=jupyter-builder /opt/venv /opt/venv
RUN mkdir -p /app/notebooks && chown app:app /app/notebooks
USER ${APP_UID}:${APP_GID}
EXPOSE 10000
CMD ["jupyter", "lab", "--ip=0.0.0.0", "--port=10000", "--no-browser", "--ServerApp.root_dir=/app"]

FROM base AS airflow
COPY --from=builder /opt/venv /opt/venv
COPY --from=airflow-builder /opt/airflow /opt/airflow
COPY deploy/airflow/dags /opt/airflow-dags
COPY compose/scripts/airflow_entrypoint.sh /usr/local/bin/tick-airflow
# `python` is the project's (the DAGs run `python -m models ...`); `airflow` is on PATH for
# the components `airflow standalone` starts
ENV PATH=/opt/venv/bin:/opt/airflow/bin:$PATH \
    AIRFLOW_HOME=/app/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow-dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False \
    TICK_PYTHON=/opt/venv/bin/python
RUN chmod 0755 /usr/local/bin/tick-airflow \
 && mkdir -p /app/airflow /app/runs && chown app:app /app/airflow /app/runs
USER ${APP_UID}:${APP_GID}
EXPOSE 8080
CMD ["tick-airflow"]
