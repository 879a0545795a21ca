"""Static validation of the docker compose stack (no Docker engine needed).

`docker-compose config` checks the file against the Compose schema with a generated .env;
the rest cross-checks the stack against the repository: mounted paths, image pins, ports,
credentials, Grafana provisioning vs the data contract, Prometheus targets, Dockerfiles and
the Kapacitor <-> agent socket.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomllib
import yaml
from conftest import require_binary

from models import contract

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_DIR = ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = COMPOSE_DIR / "images" / "python.Dockerfile"
GRAFANA = COMPOSE_DIR / "grafana"
SOCKET_DIR = "/var/run/tick-anomaly"

ONE_SHOT = {"model-bootstrap", "kibana-import", "elasticsearch-setup", "influxdb-setup"}
EXPECTED_SERVICES = {
    "influxdb", "kapacitor", "chronograf", "udf-agent", "publisher", "tfserving",
    "elasticsearch", "kibana", "grafana", "jupyter", "api", "alert-sink", "prometheus",
    "model-bootstrap", "kibana-import", "udf-supervisor", "airflow",
}  # fmt: skip
PUBLISHED = {
    "influxdb": {8086},
    "kapacitor": {9092},
    "chronograf": {8888},
    "grafana": {3000},
    "elasticsearch": {9200},
    "kibana": {5601},
    "tfserving": {8500, 8501},
    "jupyter": {10000},
    "api": {5000},
    "alert-sink": {9000},
    "prometheus": {9090},
    "airflow": {8080},
}
VAR_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?[-?+][^}]*)?\}")


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, COMPOSE_DIR / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


make_env = _load_script("make_env")
gen_dashboards = _load_script("gen_dashboards")


@pytest.fixture(scope="module")
def raw() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(raw) -> dict[str, dict]:
    return raw["services"]


@pytest.fixture(scope="module")
def env_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("env") / ".env"
    make_env.write_env(path)
    return path


def _compose(*args: str, env_file: Path | None) -> subprocess.CompletedProcess:
    binary = require_binary("docker-compose")
    cmd = [binary, "--project-directory", str(COMPOSE_DIR), "-f", str(COMPOSE_FILE)]
    if env_file is not None:
        cmd += ["--env-file", str(env_file)]
    # a clean environment: only the env file may provide the stack's variables
    env = {"PATH": "/usr/bin:/bin", "HOME": str(env_file.parent if env_file else ROOT)}
    return subprocess.run(
        [*cmd, *args], capture_output=True, text=True, env=env, timeout=60, check=False
    )


# --- docker-compose itself -------------------------------------------------------------


def test_docker_compose_config_accepts_the_stack(env_file):
    result = _compose("config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert set(resolved["services"]) >= EXPECTED_SERVICES
    # interpolation happened: the generated Grafana password reached the service
    values = make_env.read_values(env_file)
    grafana_env = resolved["services"]["grafana"]["environment"]
    assert grafana_env["GF_SECURITY_ADMIN_PASSWORD"] == values["GRAFANA_ADMIN_PASSWORD"]
    assert "${" not in result.stdout


def test_docker_compose_config_fails_loudly_without_env(tmp_path):
    empty = tmp_path / "empty.env"
    empty.write_text("# nothing\n", encoding="utf-8")
    result = _compose("config", "-q", env_file=empty)
    assert result.returncode != 0
    assert "run make env" in result.stderr


def test_compose_file_has_no_version_key_and_known_services(raw, services):
    # without `version`, docker-compose 1.29 and docker compose v2 both use the Compose
    # Specification, which is what allows `condition: service_completed_successfully`
    assert "version" not in raw
    assert set(services) == EXPECTED_SERVICES | {"elasticsearch-setup", "influxdb-setup"}


# --- paths, images, ports ----------------------------------------------------------------


def _binds(service: dict) -> list[str]:
    out = []
    for vol in service.get("volumes", []):
        source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
        if source.startswith((".", "/")):
            out.append(source)
    return out


def test_every_bind_mount_exists_in_the_repository(services):
    checked = 0
    for name, service in services.items():
        for source in _binds(service):
            path = (COMPOSE_DIR / source).resolve()
            assert path.is_relative_to(ROOT), f"{name}: {source} points outside the repository"
            assert path.exists(), f"{name}: bind mount {source} does not exist"
            checked += 1
    assert checked >= 8


def test_named_volumes_are_declared(raw, services):
    declared = set(raw["volumes"])
    for name, service in services.items():
        for vol in service.get("volumes", []):
            source = vol.split(":", 1)[0]
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: volume {source} not declared"


EXACT_TAG = re.compile(r"^[a-z0-9][a-z0-9._/-]*:v?\d+\.\d+\.\d+$")


def test_every_image_is_pinned_to_an_exact_version(services):
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image name (built images get a versioned tag too)"
        assert EXACT_TAG.match(image), f"{name}: image {image!r} is not pinned to x.y.z"
        assert "latest" not in image


def test_dockerfile_base_images_are_pinned():
    text = DOCKERFILE.read_text(encoding="utf-8")
    default = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"python:3\.\d+-slim-bookworm", default)
    for base in re.findall(r"^FROM (\S+)", text, re.M):
        assert base == "${PYTHON_IMAGE}" or base in _stages(text), base


def _published(service: dict) -> list[tuple[str, int, int]]:
    out = []
    for port in service.get("ports", []):
        assert isinstance(port, str), "use the short 'IP:HOST:CONTAINER' syntax"
        parts = port.split(":")
        assert len(parts) == 3, f"{port!r} is not bound to an address"
        out.append((parts[0], int(parts[1]), int(parts[2])))
    return out


def test_ports_are_published_on_loopback_only(services):
    for name, service in services.items():
        for ip, host, container in _published(service):
            assert ip == "127.0.0.1", f"{name}: {ip}:{host} is reachable from the network"
            assert host == container
    published = {n: {c for _, _, c in _published(s)} for n, s in services.items()}
    published = {n: ports for n, ports in published.items() if ports}
    assert published == PUBLISHED


# --- credentials -------------------------------------------------------------------------


def test_every_variable_the_stack_reads_comes_from_make_env(services):
    text = COMPOSE_FILE.read_text(encoding="utf-8")
    used = set(VAR_RE.findall(text))
    generated = {v.name for v in make_env.VARIABLES}
    assert used, "the stack reads no credentials?"
    assert used <= generated, f"not written by make env: {sorted(used - generated)}"
    # every secret is required (fails loudly), never defaulted in the compose file
    for var in used:
        assert re.search(r"\$\{" + var + r":\?", text), f"${{{var}}} must use :?message"


def test_env_example_matches_make_env():
    example = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert example == make_env.render_example()
    secrets = [v.name for v in make_env.VARIABLES if v.generate is not None]
    for name in secrets:
        assert re.search(rf"^{name}=$", example, re.M), f"{name} has a value in .env.example"


def test_no_secret_literal_in_the_compose_file(services):
    for name, service in services.items():
        env = service.get("environment", {})
        assert isinstance(env, dict), f"{name}: use the mapping form for environment"
        for key, value in env.items():
            if re.search(r"PASSWORD|TOKEN|SECRET|KEY", key) and value is not None:
                assert str(value).startswith("${"), f"{name}: {key} is a literal"


def test_env_files_are_git_ignored():
    for path in (".env", "compose/.env"):
        result = subprocess.run(
            ["git", "check-ignore", "-q", path], cwd=ROOT, capture_output=True, check=False
        )
        assert result.returncode == 0, f"{path} is not git-ignored"


# --- healthchecks and start order ----------------------------------------------------------


def test_long_running_services_have_healthchecks(services):
    for name, service in services.items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", f"{name}: one-shot job must not restart"
            continue
        check = service.get("healthcheck")
        assert check and check.get("test"), f"{name}: no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL")
        assert service.get("restart") == "unless-stopped"


def test_depends_on_conditions_are_consistent(services):
    for name, service in services.items():
        deps = service.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on needs conditions"
        for dep, spec in deps.items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = spec["condition"]
            if dep in ONE_SHOT:
                assert condition == "service_completed_successfully", (name, dep)
            else:
                assert condition == "service_healthy", (name, dep)
                assert "healthcheck" in services[dep]


def _depends(services, name) -> set[str]:
    return set(services[name].get("depends_on", {}))


def _after(services, name) -> set[str]:
    """Every service started before ``name``: its dependencies and theirs."""
    seen: set[str] = set()
    todo = [name]
    while todo:
        for dep in _depends(services, todo.pop()) - seen:
            seen.add(dep)
            todo.append(dep)
    return seen


def test_start_order(services):
    assert {"influxdb", "udf-agent"} <= _depends(services, "kapacitor")
    assert "kapacitor" in _depends(services, "udf-supervisor")
    assert "influxdb" in _after(services, "publisher")
    for svc in ("udf-agent", "api", "tfserving", "jupyter"):
        assert "model-bootstrap" in _depends(services, svc), svc
    assert "kibana" in _depends(services, "kibana-import")
    assert "elasticsearch-setup" in _depends(services, "kibana")
    assert "elasticsearch-setup" in _depends(services, "alert-sink")
    # the services' InfluxDB and Elasticsearch users exist before the services log in
    assert "influxdb" in _depends(services, "influxdb-setup")
    for svc in ("publisher", "chronograf", "grafana", "udf-supervisor"):
        assert "influxdb-setup" in _depends(services, svc), svc
    assert "elasticsearch-setup" in _depends(services, "grafana")


# --- the Kapacitor <-> agent socket, shared model volumes ------------------------------------


def _mounts(service: dict) -> dict[str, str]:
    """container path -> source for every volume of a service."""
    out = {}
    for vol in service.get("volumes", []):
        parts = vol.split(":")
        out[parts[1]] = parts[0]
    return out


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


@pytest.mark.slow
def test_airflow_is_optional_and_schedules_the_projects_commands(services, env_file):
    airflow = services["airflow"]
    assert airflow["profiles"] == ["airflow"]  # heavy: only with --profile airflow
    assert airflow["build"]["target"] == "airflow"
    assert airflow["stop_signal"] == "SIGINT"  # standalone stops its components on it
    mounts = {v.split(":")[1]: v for v in airflow["volumes"]}
    # retrain registers versions and moves aliases; the watcher writes under /app/data
    assert mounts["/app/models/registry"] == "registry:/app/models/registry"
    assert mounts["/app/data"] == "dataset:/app/data"
    assert _mounts(services["model-bootstrap"])["/app/data"] == "dataset"
    env = airflow["environment"]
    assert env["MODELS_INFLUX_URL"] == "http://influxdb:8086"
    assert env["MODELS_REGISTRY"] == "/app/models/registry"
    # the image runs the DAGs of the repository with the project's interpreter
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    stage = dockerfile[dockerfile.index("FROM base AS airflow") :]
    assert "COPY deploy/airflow/dags /opt/airflow-dags" in stage
    assert "AIRFLOW__CORE__DAGS_FOLDER=/opt/airflow-dags" in stage
    assert "TICK_PYTHON=/opt/venv/bin/python" in stage
    assert (COMPOSE_DIR / "scripts" / "airflow_entrypoint.sh").is_file()
    result = _compose("--profile", "airflow", "config", env_file=env_file)
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)["services"]["airflow"]
    values = make_env.read_values(env_file)
    assert resolved["environment"]["AIRFLOW_ADMIN_PASSWORD"] == values["AIRFLOW_ADMIN_PASSWORD"]


def test_udf_socket_is_a_shared_named_volume(services):
    agent, kapacitor = services["udf-agent"], services["kapacitor"]
    assert _mounts(agent)[SOCKET_DIR] == "udf-socket"
    assert _mounts(kapacitor)[SOCKET_DIR] == "udf-socket"
    command = agent["command"]
    assert command[:3] == ["python", "-m", "udf_agent"]
    assert _flag(command, "--socket") == f"{SOCKET_DIR}/udf.sock"
    assert _flag(command, "--batch-socket") == f"{SOCKET_DIR}/udf-batch.sock"
    assert _flag(command, "--socket-mode") == "0660"
    assert agent["healthcheck"]["test"] == ["CMD", "test", "-S", f"{SOCKET_DIR}/udf.sock"]
    # the socket is group-accessible only: Kapacitor's entrypoint gives its user the images'
    # app group (group_add would be dropped by the switch to the kapacitor user)
    gid = re.search(r"^ARG APP_GID=(\d+)$", DOCKERFILE.read_text(), re.M).group(1)
    assert kapacitor["environment"]["UDF_SOCKET_GID"] == gid
    assert "group_add" not in kapacitor


#: [udf.functions] name -> the agent's flag serving it
AGENT_SOCKET_FLAGS = {
    "score": "--socket",
    "score_batch": "--batch-socket",
    "drift": "--drift-socket",
}


def test_kapacitor_conf_sockets_match_the_agent(services):
    conf = COMPOSE_DIR / "kapacitor" / "kapacitor.conf"
    if not conf.exists():
        pytest.skip("compose/kapacitor/kapacitor.conf not written yet")
    data = tomllib.loads(conf.read_text(encoding="utf-8"))
    functions = data["udf"]["functions"]
    assert functions["score"]["socket"] == f"{SOCKET_DIR}/udf.sock"
    # every UDF Kapacitor is configured with is served by the agent, under its flag
    agent = services["udf-agent"]["command"]
    assert set(functions) == set(AGENT_SOCKET_FLAGS)
    for udf, flag in AGENT_SOCKET_FLAGS.items():
        assert functions[udf]["socket"] == _flag(agent, flag), udf
    kapacitor = services["kapacitor"]
    mounts = _mounts(kapacitor)
    env = kapacitor["environment"]
    assert mounts[env["KAPACITOR_CONF"]] == "./kapacitor/kapacitor.conf"
    # the load directory is the repository's tickscripts/, read-only, as it is
    assert mounts[data["load"]["dir"]] == "../tickscripts"
    assert "../tickscripts:/etc/kapacitor/load:ro" in kapacitor["volumes"]
    entrypoint = COMPOSE_DIR / "kapacitor" / "entrypoint.sh"
    assert mounts[kapacitor["entrypoint"][-1]] == "./kapacitor/entrypoint.sh"
    # the entrypoint waits for the same sockets the agent creates
    text = entrypoint.read_text(encoding="utf-8")
    (waited,) = re.findall(r'UDF_SOCKETS="\$\{UDF_SOCKETS-([^}]*)\}"', text)
    assert sorted(waited.split()) == sorted(f["socket"] for f in functions.values())
    # the alert sink token reaches Kapacitor's httppost basic auth from the environment
    (post,) = [p for p in data["httppost"] if p["endpoint"] == "alert-sink"]
    assert post["url"] == "http://alert-sink:9000/kapacitor"
    assert post["basic-auth"]["password"] == ""
    assert env["ALERT_SINK_TOKEN"] == "${ALERT_SINK_TOKEN:?run make env}"
    host, port = post["url"].split("/")[2].split(":")
    assert host == "alert-sink" and _flag(services[host]["command"], "--port") == port


def test_kapacitor_runs_as_its_own_user(services):
    kapacitor = services["kapacitor"]
    assert "user" not in kapacitor  # started as root, the entrypoint switches, as the image's
    text = (COMPOSE_DIR / "kapacitor" / "entrypoint.sh").read_text(encoding="utf-8")
    assert "KAPACITOR_USER:=kapacitor" in text
    assert re.search(r'^exec setpriv --reuid="\$KAPACITOR_USER"', text, re.M)
    # the only command run as root is the switch itself, or a non-root start
    assert [line.strip() for line in text.splitlines() if line.strip().startswith("exec ")] == [
        'exec "$@"',
        'exec setpriv --reuid="$KAPACITOR_USER" --regid="$(id -g "$KAPACITOR_USER")" "$groups" "$@"',
    ]


# --- least privilege: who logs in as whom ------------------------------------------------------


def _env_users(services) -> dict[str, set[str]]:
    """service -> the make_env variables it receives"""
    out = {}
    for name, service in services.items():
        env = service.get("environment", {})
        out[name] = {m for v in env.values() for m in VAR_RE.findall(str(v))}
    return out


def test_each_service_gets_only_its_own_credentials(services):
    got = _env_users(services)
    admin = {"INFLUXDB_ADMIN_USER", "INFLUXDB_ADMIN_PASSWORD"}
    # the InfluxDB admin: InfluxDB itself, its setup job, Kapacitor (subscriptions)
    assert {n for n, v in got.items() if v & admin} == {"influxdb", "influxdb-setup", "kapacitor"}
    assert {"INFLUXDB_WRITE_USER", "INFLUXDB_WRITE_USER_PASSWORD"} <= got["publisher"]
    assert not got["publisher"] & admin
    assert got["udf-supervisor"] == {
        "INFLUXDB_SUPERVISOR_USER",
        "INFLUXDB_SUPERVISOR_USER_PASSWORD",
    }
    chronograf = services["chronograf"]["environment"]
    assert chronograf["INFLUXDB_USERNAME"] == "${INFLUXDB_CHRONOGRAF_USER:?run make env}"
    assert got["chronograf"] == {"INFLUXDB_CHRONOGRAF_USER", "INFLUXDB_CHRONOGRAF_USER_PASSWORD"}
    assert got["grafana"] == {
        "GRAFANA_ADMIN_USER", "GRAFANA_ADMIN_PASSWORD", "INFLUXDB_READ_USER",
        "INFLUXDB_READ_USER_PASSWORD", "GRAFANA_ES_PASSWORD",
    }  # fmt: skip
    # the Elasticsearch superuser: Elasticsearch, its setup job, the Kibana import only
    users = {n for n, v in got.items() if "ELASTIC_PASSWORD" in v}
    assert users == {"elasticsearch", "elasticsearch-setup", "kibana-import"}


def test_influxdb_setup_grants_the_documented_rights():
    text = (COMPOSE_DIR / "influxdb" / "setup.sh").read_text(encoding="utf-8")
    joined = re.sub(r"\\\n\s*", " ", text)  # continuation lines
    grants = {
        m.group(1): set(re.findall(r'"(READ|WRITE|ALL):\$(\w+)"', m.group(2)))
        for m in re.finditer(r'^user "\$(\w+)" "\$\w+"(.*)$', joined, re.M)
    }
    assert grants == {
        "INFLUXDB_WRITE_USER": {("WRITE", "DATABASE")},
        "INFLUXDB_READ_USER": {("READ", "DATABASE")},
        "INFLUXDB_CHRONOGRAF_USER": {("READ", "DATABASE"), ("READ", "CHRONOGRAF_DATABASE")},
        # reads a gap, writes udf_events: InfluxDB keeps one privilege per database and user
        "INFLUXDB_SUPERVISOR_USER": {("ALL", "DATABASE")},
    }
    assert re.search(r"^DATABASE=fraud$", text, re.M) and contract.DATABASE == "fraud"
    result = subprocess.run(["bash", "-n", str(COMPOSE_DIR / "influxdb" / "setup.sh")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- images: current, and matched to what talks to them ---------------------------------------


def _tag(services, name: str) -> tuple[int, ...]:
    return tuple(int(x) for x in services[name]["image"].rsplit(":", 1)[1].split("."))


def test_elastic_images_match_the_python_clients_major(services):
    from importlib.metadata import version

    client_major = int(version("elasticsearch").split(".")[0])
    for name in ("elasticsearch", "elasticsearch-setup", "kibana", "kibana-import"):
        assert _tag(services, name)[0] == client_major, name
    assert len({services[n]["image"].rsplit(":", 1)[1] for n in ("elasticsearch", "kibana")}) == 1


def test_tick_images_are_the_maintained_lines(services):
    assert _tag(services, "kapacitor")[:2] == (1, 8)
    assert _tag(services, "influxdb")[0] == 1 and _tag(services, "influxdb") >= (1, 12, 4)
    assert services["influxdb-setup"]["image"] == services["influxdb"]["image"]
    assert _tag(services, "chronograf") >= (1, 11, 4)


# Kibana's Docker image maps upper-case settings to kibana.yml keys (SERVER_NAME ->
# server.name); a name it does not know is ignored without a word.
KIBANA_SETTINGS = {
    "SERVER_NAME", "ELASTICSEARCH_HOSTS", "ELASTICSEARCH_USERNAME", "ELASTICSEARCH_PASSWORD",
    "XPACK_ENCRYPTEDSAVEDOBJECTS_ENCRYPTIONKEY", "TELEMETRY_OPTIN",
}  # fmt: skip


def test_kibana_settings_are_names_kibana_reads(services):
    assert set(services["kibana"]["environment"]) <= KIBANA_SETTINGS
    assert services["kibana"]["environment"]["SERVER_NAME"] == "kibana"


def test_supervisor_probes_the_agents_sockets_and_reaches_kapacitor_and_influxdb(services):
    agent, supervisor = services["udf-agent"], services["udf-supervisor"]
    command = supervisor["command"]
    assert command[:3] == ["python", "-m", "udf_agent.supervise"]
    assert supervisor["image"] == agent["image"]
    assert _mounts(supervisor)[SOCKET_DIR] == "udf-socket"
    # it only connects to the sockets, which a read-only mount allows
    assert f"udf-socket:{SOCKET_DIR}:ro" in supervisor["volumes"]
    # it probes exactly the sockets the agent serves and Kapacitor's UDFs use
    assert _flag(command, "--socket") == _flag(agent["command"], "--socket")
    assert _flag(command, "--batch-socket") == _flag(agent["command"], "--batch-socket")
    conf = tomllib.loads((COMPOSE_DIR / "kapacitor" / "kapacitor.conf").read_text())
    functions = conf["udf"]["functions"]
    stream_udf = _flag(command, "--stream-udf") if "--stream-udf" in command else "score"
    batch_udf = _flag(command, "--batch-udf") if "--batch-udf" in command else "score_batch"
    assert functions[stream_udf]["socket"] == _flag(command, "--socket")
    assert functions[batch_udf]["socket"] == _flag(command, "--batch-socket")
    # the drift tasks are watched too (re-enabled after an agent restart, not backfilled)
    assert _flag(command, "--drift-socket") == _flag(agent["command"], "--drift-socket")
    drift_udf = _flag(command, "--drift-udf") if "--drift-udf" in command else "drift"
    assert functions[drift_udf]["socket"] == _flag(command, "--drift-socket")
    # Kapacitor's API on its container port, InfluxDB with the credentials make env writes
    port = conf["http"]["bind-address"].rsplit(":", 1)[1]
    assert _flag(command, "--kapacitor-url") == f"http://kapacitor:{port}"
    influx_port = _published(services["influxdb"])[0][2]
    assert _flag(command, "--influx-url") == f"http://influxdb:{influx_port}"
    assert _flag(command, "--events-database") == contract.DATABASE
    env = supervisor["environment"]
    assert env["UDF_SUPERVISOR_INFLUX_USERNAME"] == "${INFLUXDB_SUPERVISOR_USER:?run make env}"
    assert (
        env["UDF_SUPERVISOR_INFLUX_PASSWORD"]
        == "${INFLUXDB_SUPERVISOR_USER_PASSWORD:?run make env}"
    )
    # every flag it is given is one the command line knows
    from udf_agent.supervise.__main__ import build_parser

    known = {o for a in build_parser()._actions for o in a.option_strings}
    assert {c for c in command if c.startswith("--")} <= known
    port = _flag(command, "--metrics-port")
    assert supervisor["expose"] == [port]
    assert supervisor["healthcheck"]["test"][-1] == f"http://localhost:{port}/metrics"


def test_model_volumes_are_shared(services):
    registry = "/app/models/registry"
    for svc in ("model-bootstrap", "udf-agent", "api", "jupyter"):
        assert _mounts(services[svc])[registry] == "registry", svc
    for svc in ("model-bootstrap", "jupyter"):
        assert _mounts(services[svc])["/app/models/serving"] == "serving", svc
    assert _mounts(services["tfserving"])["/models"] == "serving"
    assert services["api"]["environment"]["API_REGISTRY"] == registry


def test_api_runs_gunicorn_with_the_project_config_on_the_published_port(services):
    api = services["api"]
    assert _flag(api["command"], "-c") == "python:api.gunicorn_conf"
    assert api["command"][-1] == "api:create_app()"
    # What gunicorn will read: the config module evaluated with the service's environment.
    env = {k: str(v) for k, v in api["environment"].items()}
    probe = "import api.gunicorn_conf as c; print(c.bind, c.workers, c.threads, c.worker_class)"
    out = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PATH": os.environ.get("PATH", ""), **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["0.0.0.0:5000", "1", "4", "gthread"]
    assert "127.0.0.1:5000:5000" in api["ports"]


def test_tfserving_serves_creditcard_tf_from_the_serving_volume(services):
    config = (COMPOSE_DIR / "tfserving" / "models.config").read_text(encoding="utf-8")
    assert re.search(r'name:\s*"creditcard_tf"', config)
    assert re.search(r'base_path:\s*"/models/creditcard_tf"', config)
    command = services["tfserving"]["command"]
    assert "--port=8500" in command and "--rest_api_port=8501" in command
    config_flag = next(c for c in command if c.startswith("--model_config_file="))
    assert config_flag.split("=", 1)[1] in _mounts(services["tfserving"])


def test_model_bootstrap_runs_the_registry_commands(services):
    assert services["model-bootstrap"]["command"] == ["model-bootstrap"]
    script = (COMPOSE_DIR / "scripts" / "model_bootstrap.sh").read_text(encoding="utf-8")
    assert "python -m models list" in script
    assert "python -m models split" in script
    assert "python -m models train --name creditcard --promote production" in script
    assert re.search(r"python -m models train-tf --name creditcard_tf .*\n.*--serving-dir "
                     r"\"\$SERVING_DIR\" --promote production", script)  # fmt: skip
    result = subprocess.run(["sh", "-n", str(COMPOSE_DIR / "scripts" / "model_bootstrap.sh")],
                            capture_output=True, text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr


# --- Dockerfile ---------------------------------------------------------------------------


def _stages(text: str) -> set[str]:
    return set(re.findall(r"^FROM \S+ AS (\S+)$", text, re.M))


def _instructions(text: str) -> list[tuple[str, str]]:
    joined = re.sub(r"\\\n", " ", text)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_copies_only_existing_paths():
    text = DOCKERFILE.read_text(encoding="utf-8")
    ignored = [
        line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]  # fmt: skip
    copies = [rest for kw, rest in _instructions(text) if kw == "COPY"]
    assert copies
    for rest in copies:
        args = rest.split()
        if any(a.startswith("--from=") for a in args):
            stage = next(a for a in args if a.startswith("--from=")).split("=", 1)[1]
            assert stage in _stages(text), stage
            continue
        for source in args[:-1]:
            assert (ROOT / source).exists(), f"COPY {source}: missing in the build context"
            assert source not in ignored, f"COPY {source}: excluded by .dockerignore"


def test_dockerfile_installs_the_project_packages_and_extras(services):
    text = DOCKERFILE.read_text(encoding="utf-8")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    copied = {rest.split()[0] for kw, rest in _instructions(text) if kw == "COPY"}
    assert packages <= copied, f"packages not copied: {packages - copied}"
    extras = set(pyproject["project"]["optional-dependencies"])
    stages = _stages(text)
    for name, service in services.items():
        build = service.get("build")
        if not build:
            continue
        assert build["dockerfile"] == "compose/images/python.Dockerfile"
        assert build["target"] in stages, f"{name}: no stage {build['target']}"
        wanted = build.get("args", {}).get("EXTRAS", "")
        for extra in filter(None, wanted.split(",")):
            assert extra in extras, f"{name}: unknown extra {extra!r}"


def test_runtime_stages_run_as_a_fixed_non_root_user():
    text = DOCKERFILE.read_text(encoding="utf-8")
    for stage in ("runtime", "jupyter"):
        body = text.split(f" AS {stage}\n", 1)[1].split("\nFROM ", 1)[0]
        user = re.search(r"^USER (\S+)$", body, re.M)
        assert user and user.group(1).split(":")[0] not in ("root", "0"), stage
    assert re.search(r"^ARG APP_UID=(\d+)$", text, re.M).group(1) != "0"


def test_dockerignore_keeps_the_context_small():
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for entry in (".venv", ".git", "data", "models/registry", "models/serving", "runs", ".env"):
        assert entry in ignored, entry


# --- Grafana -------------------------------------------------------------------------------


def _provisioned_datasources() -> list[dict]:
    out = []
    for path in sorted((GRAFANA / "provisioning" / "datasources").glob("*.yaml")):
        out += yaml.safe_load(path.read_text(encoding="utf-8"))["datasources"]
    return out


def test_grafana_datasources(services):
    by_uid = {ds["uid"]: ds for ds in _provisioned_datasources()}
    assert set(by_uid) == {"influxdb-fraud", "es-fraud-alerts", "prometheus"}
    influx = by_uid["influxdb-fraud"]
    assert influx["type"] == "influxdb" and influx["url"] == "http://influxdb:8086"
    assert influx["jsonData"]["version"] == "InfluxQL"
    assert influx["jsonData"]["dbName"] == contract.DATABASE
    es = by_uid["es-fraud-alerts"]
    assert es["type"] == "elasticsearch" and es["url"] == "http://elasticsearch:9200"
    assert es["jsonData"]["index"] == contract.ALERT_INDEX
    assert es["jsonData"]["timeField"] == "@timestamp"
    # the read-only user of compose/elasticsearch/setup.sh, not the superuser
    assert es["basicAuth"] is True and es["basicAuthUser"] == "grafana"
    assert es["secureJsonData"]["basicAuthPassword"] == "${GRAFANA_ES_PASSWORD}"
    setup = (COMPOSE_DIR / "elasticsearch" / "setup.sh").read_text(encoding="utf-8")
    grafana_user = setup.split("/_security/user/grafana", 1)[1].split("\nes ", 1)[0]
    assert "fraud_alerts_reader" in grafana_user
    assert by_uid["prometheus"]["url"] == "http://prometheus:9090"
    # every $VAR the provisioning interpolates is in Grafana's environment
    text = "".join(
        p.read_text() for p in (GRAFANA / "provisioning").rglob("*.yaml")
    )  # fmt: skip
    grafana_env = services["grafana"]["environment"]
    for var in VAR_RE.findall(text):
        assert var in grafana_env, f"Grafana provisioning reads ${var}, not set in compose"


def test_grafana_dashboard_provider_points_at_the_mounted_folder(services):
    (provider,) = yaml.safe_load(
        (GRAFANA / "provisioning" / "dashboards" / "dashboards.yaml").read_text()
    )["providers"]
    path = provider["options"]["path"]
    assert _mounts(services["grafana"])[path] == "./grafana/dashboards"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / Path(home).relative_to(path)).is_file()


def _dashboards() -> dict[str, dict]:
    return {
        p.name: json.loads(p.read_text(encoding="utf-8"))
        for p in sorted((GRAFANA / "dashboards").glob("*.json"))
    }


def _targets(dashboard: dict):
    for panel in dashboard.get("panels", []):
        for sub in [panel, *panel.get("panels", [])]:
            for target in sub.get("targets", []):
                yield sub, target


def test_generated_dashboards_are_up_to_date():
    assert gen_dashboards.main(["--check"]) == 0


def test_dashboards_are_well_formed_and_use_provisioned_datasources():
    uids = {ds["uid"] for ds in _provisioned_datasources()}
    dashboards = _dashboards()
    assert {"live-scoring.json", "model-quality.json", "service-metrics.json"} <= set(dashboards)
    seen_uids = set()
    for name, dashboard in dashboards.items():
        assert dashboard["uid"] and dashboard["title"] and dashboard["panels"], name
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for panel, target in _targets(dashboard):
            ds = target.get("datasource") or panel.get("datasource")
            assert isinstance(ds, dict) and ds.get("uid") in uids, (name, panel["title"], ds)
            seen_uids.add(ds["uid"])
    assert {"influxdb-fraud", "prometheus"} <= seen_uids


def _quality_fields() -> set[str]:
    fields = set(gen_dashboards.QUALITY_FIELDS)
    tickscripts = ROOT / "tickscripts"
    if tickscripts.is_dir():
        text = "".join(p.read_text(encoding="utf-8") for p in tickscripts.rglob("*.tick"))
        for names in re.findall(r"\.as\(([^)]*)\)", text):
            fields |= set(re.findall(r"'([A-Za-z_]+)'", names))
    return fields


def _drift_names() -> set[str]:
    """What the drift task writes into model_drift: the agent's fields (contract.DRIFT_FIELDS
    and psi_<feature>, held to the agent by tests/test_alert_sink_drift.py) and the tag the
    task adds."""
    psi = {contract.DRIFT_PSI_PREFIX + f for f in contract.FEATURES}
    return psi | set(contract.DRIFT_FIELDS) | {contract.DATA_SET_TAG}


def test_influx_queries_name_only_contract_measurements_and_fields():
    measurements = {
        contract.INPUT_MEASUREMENT, contract.SCORED_MEASUREMENT,
        contract.MODEL_QUALITY_MEASUREMENT, contract.DRIFT_MEASUREMENT,
    }  # fmt: skip
    names = (
        set(contract.INPUT_FIELDS) | set(contract.OUTPUT_FIELDS) | set(contract.OUTPUT_TAGS)
        | {contract.SOURCE_TAG} | _quality_fields() | _drift_names()
    )  # fmt: skip
    checked = 0
    for name, dashboard in _dashboards().items():
        for panel, target in _targets(dashboard):
            if (target.get("datasource") or panel["datasource"])["uid"] != "influxdb-fraud":
                continue
            query = target["query"]
            froms = re.findall(r'FROM\s+(?:"\w+"\.)?"?([\w-]+)"?', query)
            assert froms and set(froms) <= measurements, (name, query)
            quoted = set(re.findall(r'"([^"]+)"', query)) - measurements
            quoted -= {contract.RETENTION_POLICY}
            aliases = set(re.findall(r'AS\s+"([^"]+)"', query))
            unknown = quoted - aliases - names
            assert not unknown, f"{name}: {panel['title']}: not in the contract: {unknown}"
            checked += 1
    assert checked >= 10


def _influx_targets():
    for name, dashboard in _dashboards().items():
        for panel, target in _targets(dashboard):
            if (target.get("datasource") or panel["datasource"])["uid"] == "influxdb-fraud":
                yield name, panel, target


def test_dashboards_filter_and_group_by_model():
    per_model = (
        contract.SCORED_MEASUREMENT,
        contract.MODEL_QUALITY_MEASUREMENT,
        contract.DRIFT_MEASUREMENT,
    )
    checked = 0
    for name, panel, target in _influx_targets():
        query = target["query"]
        if not any(f'"{m}"' in query for m in per_model):
            continue
        where = f"{name}: {panel['title']}"
        assert '"model" =~ /^$model$/' in query, f"{where}: not filtered by $model"
        group = query.split("GROUP BY", 1)[1] if "GROUP BY" in query else ""
        assert '"model"' in group or re.search(r",\s*\*", group), f"{where}: not per model"
        assert "$tag_model" in target.get("alias", ""), f"{where}: series not named by model"
        checked += 1
    assert checked >= 16
    for dashboard in ("live-scoring.json", "model-quality.json", "model-drift.json"):
        (var,) = _dashboards()[dashboard]["templating"]["list"]
        assert var["name"] == "model" and var["multi"] and var["includeAll"]
        assert (
            var["query"]
            == 'SHOW TAG VALUES FROM "autogen"."transactions_scored" WITH KEY = "model"'
        )


def test_dashboards_read_thresholds_from_the_data_and_the_latest_points():
    for name, panel, target in _influx_targets():
        query = target["query"]
        # a score compared with a number would be a threshold someone typed in
        assert not re.search(r'"score\w*"\s*[<>]=?\s*0*\.?\d*[1-9]', query), (name, query)
        if "LIMIT" in query:
            assert "ORDER BY time DESC LIMIT" in query, (name, panel["title"])


@pytest.mark.influxdb
def test_every_dashboard_query_runs_on_a_real_influxdb(influxdb):
    """The InfluxQL of every panel and variable, with Grafana's macros filled in as Grafana
    does, against scored points of two models (one with a challenger)."""
    influxdb.create_database(contract.DATABASE)
    now = time.time_ns()
    lines = [
        f"transactions,source=s Amount=1.0,label=0i {now - 5 * 10**9}",
        "transactions_scored,source=s,model=a,model_version=1 "
        f'Amount=1.0,label=0i,txn_id="e",score_error="missing V1",threshold=0.22 {now - 10**9}',
    ]
    for i in range(20):
        ts = now - (i + 1) * 10**9
        common = f'Amount=1.0,label={i % 2}i,txn_id="t{i}",score=0.{i % 9 + 1},is_anomaly={str(i % 3 == 0).lower()}'
        lines.append(
            f"transactions_scored,source=s,model=a,model_version=1 {common},threshold=0.22,"
            f"score_challenger=0.{(i + 4) % 9 + 1},threshold_challenger=0.6 {ts}"
        )
        lines.append(
            f"transactions_scored,source=s,model=b,model_version=3 {common},threshold=0.9 {ts}"
        )
        lines.append(
            f"model_quality,model=a,model_version=1 precision=0.5,recall=0.5,alert_rate=0.1,"
            f"tp=1i,fp=1i,fn=1i,flagged=2i,total=20i {ts}"
        )
        for model, version in (("a", "1"), ("b", "3")):
            psi = ",".join(f"psi_{f}=0.0{(i + j) % 9 + 1}" for j, f in enumerate(contract.FEATURES))
            level = '"critical"' if i % 5 == 0 else '"ok"'
            lines.append(
                f"model_drift,model={model},model_version={version},data_set=creditcard "
                f'{psi},psi_score=0.02,psi_max=0.3,drift_feature="V14",drift_level={level},'
                f"count=600i,unscored=0i {ts}"
            )
    influxdb.write(contract.DATABASE, "\n".join(lines))

    def run(query: str, models: str) -> list[dict]:
        q = (
            query.replace("$timeFilter", "time > now() - 1h")
            .replace("$__interval_ms", "10000")
            .replace("$__interval", "10s")
            .replace("$model", models)
        )
        (result,) = influxdb.query(q, db=contract.DATABASE, epoch=None)
        assert "error" not in result, (q, result)
        return result.get("series", [])

    for dashboard in ("live-scoring.json", "model-quality.json", "model-drift.json"):
        (var,) = _dashboards()[dashboard]["templating"]["list"]
        values = {v[1] for s in run(var["query"], "") for v in s["values"]}
        assert values == {"a", "b"}
    checked = 0
    for name, panel, target in _influx_targets():
        series = run(target["query"], "(a|b)")
        if '"model" =~' not in target["query"]:
            continue
        models = {s.get("tags", {}).get("model") for s in series}
        assert models <= {"a", "b"} and models, (name, panel["title"], target["refId"])
        only_b = {s.get("tags", {}).get("model") for s in run(target["query"], "b")}
        assert only_b <= {"b"}, (name, panel["title"])
        checked += 1
    assert checked >= 16


def test_prometheus_queries_name_metrics_the_services_export():
    sources = {
        "udf_supervisor": (ROOT / "udf_agent" / "supervise" / "metrics.py"),
        "udf_agent": (ROOT / "udf_agent" / "metrics.py"),
        "alert_sink": (ROOT / "alert_sink" / "metrics.py"),
        "api": (ROOT / "api" / "metrics.py"),
    }
    exported: set[str] = set()
    for path in sources.values():
        if path.exists():
            exported |= set(
                re.findall(
                    r'"((?:udf_agent|udf_supervisor|alert_sink|api)_[a-z_]+)"', path.read_text()
                )
            )
    checked = 0
    for name, dashboard in _dashboards().items():
        for _panel, target in _targets(dashboard):
            for metric in re.findall(
                r"\b((?:udf_agent|udf_supervisor|alert_sink|api)_[a-z_]+)", target.get("expr", "")
            ):
                prefix = next(p for p in sources if metric.startswith(p + "_"))
                if not sources[prefix].exists():
                    continue
                base = re.sub(r"_(total|bucket|sum|count|created|info)$", "", metric)
                assert base in exported or metric in exported, f"{name}: {metric} not exported"
                checked += 1
    assert checked >= 10


def test_live_scoring_annotates_the_supervisors_udf_events():
    from udf_agent.supervise.influx import EVENT_FIELDS, EVENT_TAGS, EVENTS_MEASUREMENT

    (annotation,) = [
        a
        for a in _dashboards()["live-scoring.json"]["annotations"]["list"]
        if EVENTS_MEASUREMENT in a["query"]
    ]
    assert annotation["datasource"]["uid"] == "influxdb-fraud"
    for spec in (annotation, annotation["target"]):
        query = spec["query"]
        assert "$timeFilter" in query
        assert re.findall(r'FROM\s+"\w+"\."(\w+)"', query) == [EVENTS_MEASUREMENT]
        selected = set(re.findall(r'"([^"]+)"', query.split("FROM")[0]))
        assert selected <= set(EVENT_FIELDS) | set(EVENT_TAGS)
        assert spec["textColumn"] in selected and spec["timeEndColumn"] in selected
        assert set(spec["tagsColumn"].split(",")) <= selected
    assert annotation["target"]["fromAnnotations"] is True


def test_alerts_dashboard_if_present_reads_the_alert_index():
    path = GRAFANA / "dashboards" / "fraud-alerts.json"
    if not path.exists():
        pytest.skip("fraud-alerts.json not written yet")
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    uids = {
        (t.get("datasource") or p.get("datasource") or {}).get("uid")
        for p, t in _targets(dashboard)
    }  # fmt: skip
    assert "es-fraud-alerts" in uids


# --- Prometheus ---------------------------------------------------------------------------


def test_prometheus_scrapes_the_services_on_their_ports(services):
    config = yaml.safe_load((COMPOSE_DIR / "prometheus" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
        for job in config["scrape_configs"]
    }
    assert targets["udf-agent"] == ["udf-agent:9102"]
    assert targets["udf-supervisor"] == ["udf-supervisor:9103"]
    assert _flag(services["udf-supervisor"]["command"], "--metrics-port") == "9103"
    assert targets["alert-sink"] == ["alert-sink:9000"]
    assert targets["api"] == ["api:5000"]
    assert _flag(services["udf-agent"]["command"], "--metrics-port") == "9102"
    assert _flag(services["alert-sink"]["command"], "--port") == "9000"
    assert _flag(services["alert-sink"]["command"], "--host") == "0.0.0.0"
    for job, hosts in targets.items():
        for target in hosts:
            host = target.split(":")[0]
            assert host == "localhost" or host in services, f"{job}: unknown host {host}"


# --- Kibana --------------------------------------------------------------------------------


def test_kibana_saved_objects_if_present_reference_the_alert_index(services):
    kibana = COMPOSE_DIR / "kibana"
    if not kibana.is_dir():
        pytest.skip("compose/kibana not written yet")
    ndjson = sorted(kibana.glob("*.ndjson"))
    assert ndjson, "compose/kibana holds no saved objects"
    objects = [
        json.loads(line) for path in ndjson
        for line in path.read_text(encoding="utf-8").splitlines() if line.strip()
    ]  # fmt: skip
    assert contract.ALERT_INDEX in json.dumps(objects)
    assert (kibana / "import.sh").is_file()
    assert services["kibana-import"]["entrypoint"] == ["bash", "/import/import.sh"]
    env = services["kibana-import"]["environment"]
    assert env["KIBANA_URL"] == "http://kibana:5601" and "ELASTIC_PASSWORD" in env


def test_saved_models_are_exported_by_the_tf_version_tf_serving_runs(services):
    # TF Serving loads SavedModels of its own TensorFlow version or older, so the images
    # that export them (model-bootstrap, jupyter) pin TensorFlow to the server's tag.
    text = DOCKERFILE.read_text(encoding="utf-8")
    tf_version = re.search(r"^ARG TF_VERSION=(\S+)$", text, re.M).group(1)
    assert services["tfserving"]["image"] == f"tensorflow/serving:{tf_version}"
    install = next(rest for kw, rest in _instructions(text) if kw == "RUN" and "EXTRAS" in rest)
    assert "tensorflow==%s" in install and "tensorflow-serving-api==%s" in install
    assert '-c /tmp/tf.txt "${wheel}[${EXTRAS}]"' in install
    for name in ("model-bootstrap", "udf-agent", "jupyter"):
        args = services[name]["build"].get("args", {})
        assert "tf" in args.get("EXTRAS", "").split(","), name
        assert args.get("TF_VERSION", tf_version) == tf_version, name
