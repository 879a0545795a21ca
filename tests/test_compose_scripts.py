"""The compose helper scripts against real peers: `make_env` on a temp dir, `smoke` and the
container healthcheck against real HTTP servers on loopback, `influx-recent` against a real
influxd."""

from __future__ import annotations

import importlib.util
import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import free_port, require_binary
from http_serving import serve_in_thread

SCRIPTS = Path(__file__).resolve().parents[1] / "compose" / "scripts"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"compose_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


make_env = _load("make_env")
smoke = _load("smoke")
healthcheck = _load("healthcheck")


# --- make_env ------------------------------------------------------------------------------


def test_make_env_writes_random_private_credentials(tmp_path):
    path = tmp_path / ".env"
    assert make_env.main(["--output", str(path), "--no-link"]) == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    values = make_env.read_values(path)
    assert set(values) == {v.name for v in make_env.VARIABLES}
    secrets = [v.name for v in make_env.VARIABLES if v.generate is not None]
    assert all(len(values[name]) >= 24 for name in secrets)
    assert len({values[name] for name in secrets}) == len(secrets), "values must differ"
    assert len(values["KIBANA_ENCRYPTION_KEY"]) >= 32

    other = tmp_path / "other.env"
    make_env.main(["--output", str(other), "--no-link"])
    again = make_env.read_values(other)
    assert all(values[name] != again[name] for name in secrets), "not random"


def test_make_env_refuses_to_overwrite_without_force(tmp_path, capsys):
    path = tmp_path / ".env"
    path.write_text("ELASTIC_PASSWORD=keep-me\n")
    assert make_env.main(["--output", str(path), "--no-link"]) == 1
    assert "--force" in capsys.readouterr().err
    assert path.read_text() == "ELASTIC_PASSWORD=keep-me\n"
    assert make_env.main(["--output", str(path), "--force", "--no-link"]) == 0
    assert make_env.read_values(path)["ELASTIC_PASSWORD"] != "keep-me"


def test_make_env_adds_only_what_an_older_file_lacks(tmp_path, capsys):
    path = tmp_path / ".env"
    assert make_env.main(["--output", str(path), "--add-missing", "--no-link"]) == 1
    assert "does not exist" in capsys.readouterr().err
    make_env.write_env(path)
    full = make_env.read_values(path)
    # a file written before two variables existed, without a final newline
    kept = [line for line in path.read_text().splitlines() if "SUPERVISOR" not in line]
    path.write_text("\n".join(kept))
    before = path.read_text()
    assert make_env.main(["--output", str(path), "--add-missing", "--no-link"]) == 0
    assert "INFLUXDB_SUPERVISOR_USER, INFLUXDB_SUPERVISOR_USER_PASSWORD" in capsys.readouterr().out
    after = make_env.read_values(path)
    assert set(after) == {v.name for v in make_env.VARIABLES}
    assert path.read_text().startswith(before + "\n")  # what it had, unchanged
    assert {k: v for k, v in after.items() if "SUPERVISOR" not in k} == {
        k: v for k, v in full.items() if "SUPERVISOR" not in k
    }
    assert after["INFLUXDB_SUPERVISOR_USER"] == "supervisor"
    assert len(after["INFLUXDB_SUPERVISOR_USER_PASSWORD"]) >= 24
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert make_env.main(["--output", str(path), "--add-missing", "--no-link"]) == 0
    assert "nothing (complete)" in capsys.readouterr().out
    assert make_env.read_values(path) == after


def test_make_env_links_the_file_next_to_the_compose_file(tmp_path):
    env = tmp_path / ".env"
    compose_dir = tmp_path / "compose"
    compose_dir.mkdir()
    make_env.write_env(env)
    link = make_env.link_for_compose(env, compose_dir)
    assert link.is_symlink() and os.readlink(link) == "../.env"
    assert make_env.read_values(link) == make_env.read_values(env)
    assert make_env.link_for_compose(env, compose_dir) == link  # idempotent
    link.unlink()
    link.write_text("MINE=1\n")
    assert make_env.link_for_compose(env, compose_dir) is None  # a real file is left alone
    assert link.read_text() == "MINE=1\n"


# --- a real HTTP peer ----------------------------------------------------------------------


def test_smoke_check_passes_on_a_healthy_answer_and_sends_credentials(http_peer):
    port, handler = http_peer
    handler.routes["/_cluster/health"] = (200, json.dumps({"status": "yellow"}).encode())
    check = smoke.Check(service="elasticsearch", port=port, path="/_cluster/health",
                        auth=("elastic", "s3cret"), verify=smoke._es_health)  # fmt: skip
    result = smoke.run_check(check, host="127.0.0.1", timeout=5)
    assert result.ok, result.detail
    assert handler.seen_auth == ["Basic ZWxhc3RpYzpzM2NyZXQ="]


@pytest.mark.parametrize(
    ("route", "answer", "verify", "problem"),
    [
        ("/_cluster/health", (200, b'{"status": "red"}'), "_es_health", "cluster status red"),
        ("/api/health", (200, b'{"database": "failing"}'), "_grafana_health", "database"),
        ("/v1/models/creditcard_tf",
         (200, b'{"model_version_status": [{"state": "LOADING"}]}'), "_tfserving", "LOADING"),
        ("/api/v1/targets",
         (200, json.dumps({"data": {"activeTargets": [
             {"labels": {"job": "udf-agent"}, "health": "down"},
             {"labels": {"job": "api"}, "health": "up"}]}}).encode()),
         "_prometheus_targets", "alert-sink"),
        ("/health", (503, b"{}"), None, "HTTP 503"),
        ("/health", (200, b"not json"), "_kibana", "unexpected body"),
    ],
)  # fmt: skip
def test_smoke_check_reports_unhealthy_answers(http_peer, route, answer, verify, problem):
    port, handler = http_peer
    handler.routes[route] = answer
    kwargs = {"verify": getattr(smoke, verify)} if verify else {}
    check = smoke.Check(service="svc", port=port, path=route, **kwargs)
    result = smoke.run_check(check, host="127.0.0.1", timeout=5)
    assert not result.ok
    assert problem in result.detail


def test_smoke_main_prints_a_table_and_fails_when_services_are_down(tmp_path, capsys):
    env = tmp_path / ".env"
    make_env.write_env(env)
    # every check targets fixed ports on a loopback address where nothing listens
    code = smoke.main(["--env-file", str(env), "--host", "127.0.0.254", "--timeout", "0.5"])
    out = capsys.readouterr().out
    assert code == 1
    assert out.splitlines()[0].split() == ["SERVICE", "URL", "STATUS", "DETAIL"]
    for service in ("influxdb", "kapacitor", "grafana", "kibana", "tfserving", "alert-sink"):
        assert service in out
    assert "0/12 healthy" in out


def test_smoke_main_needs_the_env_file(tmp_path, capsys):
    assert smoke.main(["--env-file", str(tmp_path / "missing")]) == 2
    assert "make env" in capsys.readouterr().err


# --- container healthcheck -----------------------------------------------------------------


def test_healthcheck_http(http_peer, capsys):
    port, handler = http_peer
    handler.routes["/health"] = (200, b"{}")
    handler.routes["/sick"] = (500, b"{}")
    assert healthcheck.main(["http", f"http://127.0.0.1:{port}/health"]) == 0
    assert healthcheck.main(["http", f"http://127.0.0.1:{port}/sick"]) == 1
    assert "HTTP 500" in capsys.readouterr().out
    closed = free_port()
    assert healthcheck.main(["--timeout", "1", "http", f"http://127.0.0.1:{closed}/"]) == 1


@pytest.fixture
def influxd(tmp_path):
    binary = require_binary("influxd")
    port, bind_port = free_port(), free_port()
    conf = tmp_path / "influxdb.conf"
    conf.write_text(
        f'bind-address = "127.0.0.1:{bind_port}"\nreporting-disabled = true\n'
        f'[meta]\n  dir = "{tmp_path}/meta"\n'
        f'[data]\n  dir = "{tmp_path}/data"\n  wal-dir = "{tmp_path}/wal"\n'
        f'[http]\n  bind-address = "127.0.0.1:{port}"\n  log-enabled = false\n'
    )  # fmt: skip
    proc = subprocess.Popen(
        [binary, "-config", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    pytest.fail("influxd did not start")
                time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _influx_post(url: str, path: str, data: bytes) -> None:
    urllib.request.urlopen(urllib.request.Request(f"{url}{path}", data=data), timeout=10).close()


@pytest.mark.influxdb
def test_healthcheck_influx_recent_needs_fresh_points(influxd, capsys):
    _influx_post(influxd, "/query", b"q=CREATE+DATABASE+fraud")
    args = ["influx-recent", "--url", influxd, "--measurement", "transactions", "--within", "60"]
    assert healthcheck.main(args) == 1
    assert "no transactions point" in capsys.readouterr().out

    old = time.time_ns() - 3600 * 10**9
    _influx_post(influxd, "/write?db=fraud", f"transactions Amount=1.5,label=0i {old}".encode())
    assert healthcheck.main(args) == 1, "an hour-old point does not make the publisher healthy"

    _influx_post(
        influxd, "/write?db=fraud", f"transactions Amount=2.5,label=1i {time.time_ns()}".encode()
    )
    assert healthcheck.main(args) == 0
    assert healthcheck.main([*args[:-4], "--database", "nope", *args[-4:]]) == 1


# --- influxdb/setup.sh: least-privilege users on a real influxd with auth --------------------

INFLUX_SETUP = SCRIPTS.parent / "influxdb" / "setup.sh"


def _setup_env(url: str, **kw: str) -> dict[str, str]:
    env = {
        "PATH": os.environ["PATH"],
        "INFLUX_URL": url,
        "INFLUXDB_ADMIN_USER": "admin",
        "INFLUXDB_ADMIN_PASSWORD": "s3cret",
        "INFLUXDB_WRITE_USER": "publisher",
        "INFLUXDB_WRITE_USER_PASSWORD": "w'1\\x",  # quoting is the script's job
        "INFLUXDB_READ_USER": "grafana",
        "INFLUXDB_READ_USER_PASSWORD": "r1",
        "INFLUXDB_CHRONOGRAF_USER": "chronograf",
        "INFLUXDB_CHRONOGRAF_USER_PASSWORD": "c1",
        "INFLUXDB_SUPERVISOR_USER": "supervisor",
        "INFLUXDB_SUPERVISOR_USER_PASSWORD": "s1",
        "INFLUXDB_SETUP_TIMEOUT": "10",
    }
    env.update(kw)
    return env


def _as(url: str, user: str, password: str, path: str, q: str | None = None, body: str = ""):
    """(HTTP status, error text) of one request as ``user``."""
    import requests

    params = {"db": "fraud"} if q is None else {"db": "fraud", "q": q}
    r = requests.post(f"{url}{path}", params=params, data=body, auth=(user, password), timeout=10)
    error = r.json().get("error", "") if r.content and r.status_code != 204 else ""
    if not error and r.status_code == 200 and q is not None:
        error = next((x["error"] for x in r.json()["results"] if "error" in x), "")
    return r.status_code, error


@pytest.mark.slow
@pytest.mark.influxdb
def test_influxdb_setup_gives_each_user_only_its_rights(tmp_path):
    bash = require_binary("bash")
    require_binary("curl")
    sys.path.insert(0, str(Path(__file__).parent))
    from influxdb_server import InfluxDBServer

    with InfluxDBServer(
        binary=require_binary("influxd"), base_dir=tmp_path / "influx", auth=("admin", "s3cret")
    ) as server:
        url = server.url
        env = _setup_env(url)
        r = subprocess.run([bash, str(INFLUX_SETUP)], env=env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert "event=done" in r.stdout and "w'1" not in r.stdout + r.stderr
        write_pw = env["INFLUXDB_WRITE_USER_PASSWORD"]
        point = f"transactions Amount=1.5,label=0i {time.time_ns()}"
        # publisher: write, nothing else
        assert _as(url, "publisher", write_pw, "/write", body=point)[0] == 204
        assert (
            "not authorized"
            in _as(url, "publisher", write_pw, "/query", "SELECT * FROM transactions")[1]
        )
        assert "admin" in _as(url, "publisher", write_pw, "/query", "CREATE DATABASE x")[1]
        # grafana and chronograf: read, no write
        for user, pw in (("grafana", "r1"), ("chronograf", "c1")):
            status, error = _as(url, user, pw, "/query", "SELECT count(Amount) FROM transactions")
            assert status == 200 and not error, (user, error)
            assert _as(url, user, pw, "/write", body=point)[0] == 403, user
            assert "requires admin" in _as(url, user, pw, "/query", "SHOW USERS")[1], user
        grants = server.query('SHOW GRANTS FOR "chronograf"', epoch=None)[0]["series"][0]["values"]
        assert sorted(grants) == [["chronograf", "READ"], ["fraud", "READ"]]
        # the task supervisor: reads a gap and the field types, writes udf_events; no admin
        event = f'udf_events,task=score_creditcard,event=failed text="x" {time.time_ns()}'
        assert _as(url, "supervisor", "s1", "/write", body=event)[0] == 204
        for q in ("SELECT count(Amount) FROM transactions", "SHOW FIELD KEYS FROM transactions"):
            status, error = _as(url, "supervisor", "s1", "/query", q)
            assert status == 200 and not error, (q, error)
        assert "requires admin" in _as(url, "supervisor", "s1", "/query", "SHOW USERS")[1]
        assert "admin" in _as(url, "supervisor", "s1", "/query", "CREATE DATABASE x")[1]
        grants = server.query('SHOW GRANTS FOR "supervisor"', epoch=None)[0]["series"][0]["values"]
        assert grants == [["fraud", "ALL PRIVILEGES"]]

        # a re-run sets new passwords and takes back rights granted by hand
        server.query('GRANT ALL ON "fraud" TO "grafana"', post=True, epoch=None)
        server.query('GRANT ALL PRIVILEGES TO "publisher"', post=True, epoch=None)
        env = _setup_env(url, INFLUXDB_READ_USER_PASSWORD="r2")
        r = subprocess.run([bash, str(INFLUX_SETUP)], env=env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        assert "event=password_set user=grafana" in r.stdout
        assert _as(url, "grafana", "r1", "/query", "SHOW DATABASES")[0] == 401
        assert _as(url, "grafana", "r2", "/write", body=point)[0] == 403
        users = {
            u[0]: u[1] for u in server.query("SHOW USERS", epoch=None)[0]["series"][0]["values"]
        }
        assert users == {
            "admin": True, "publisher": False, "grafana": False, "chronograf": False,
            "supervisor": False,
        }  # fmt: skip

        # another data set's database: created, and each user has the same rights on it
        env = _setup_env(url, INFLUXDB_READ_USER_PASSWORD="r2",
                         INFLUXDB_EXTRA_DATABASES="maintenance plant db")  # fmt: skip
        r = subprocess.run([bash, str(INFLUX_SETUP)], env=env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr

        def grants(user: str) -> list:
            q = f'SHOW GRANTS FOR "{user}"'
            return sorted(server.query(q, epoch=None)[0]["series"][0]["values"])

        assert grants("publisher") == [
            ["db", "WRITE"], ["fraud", "WRITE"], ["maintenance", "WRITE"], ["plant", "WRITE"]
        ]  # fmt: skip
        assert grants("grafana") == [
            ["db", "READ"], ["fraud", "READ"], ["maintenance", "READ"], ["plant", "READ"]
        ]  # fmt: skip
        assert ["chronograf", "READ"] in grants("chronograf") and len(grants("chronograf")) == 5

        # wrong admin password: a clear failure, not a hang
        env = _setup_env(url, INFLUXDB_ADMIN_PASSWORD="wrong", INFLUXDB_SETUP_TIMEOUT="0")
        r = subprocess.run([bash, str(INFLUX_SETUP)], env=env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        assert r.returncode != 0 and "influxdb_not_available" in r.stdout + r.stderr


# --- elasticsearch/setup.sh: what it asks Elasticsearch for -------------------------------------

ES_SETUP = SCRIPTS.parent / "elasticsearch" / "setup.sh"


def test_elasticsearch_setup_creates_least_privilege_users(tmp_path):
    import base64
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bash = require_binary("bash")
    require_binary("curl")
    seen: list[tuple[str, str, dict | None]] = []

    class Security(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _answer(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            expected = "Basic " + base64.b64encode(b"elastic:el-pw").decode()
            status = 200 if self.headers.get("Authorization") == expected else 401
            seen.append((self.command, self.path, json.loads(body) if body else None))
            data = json.dumps({"cluster_name": "x"} if status == 200 else {}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_PUT = do_POST = _answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Security)
    serve_in_thread(server)
    env = {
        "PATH": os.environ["PATH"],
        "ES_URL": f"http://127.0.0.1:{server.server_address[1]}",
        "ELASTIC_PASSWORD": "el-pw",
        "KIBANA_SYSTEM_PASSWORD": "kb-pw",
        "ALERT_SINK_ES_PASSWORD": "as-pw",
        "GRAFANA_ES_PASSWORD": "gf-pw",
    }
    try:
        r = subprocess.run([bash, str(ES_SETUP)], env=env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        calls = {(m, p): b for m, p, b in seen if m != "GET"}
        reader = calls[("PUT", "/_security/role/fraud_alerts_reader")]
        assert reader["cluster"] == ["monitor"]
        (indices,) = reader["indices"]
        assert indices["names"] == ["fraud-alerts", "fraud-alerts-*"]
        assert sorted(indices["privileges"]) == ["read", "view_index_metadata"]
        grafana = calls[("PUT", "/_security/user/grafana")]
        assert grafana["roles"] == ["fraud_alerts_reader"] and grafana["password"] == "gf-pw"
        writer = calls[("PUT", "/_security/user/alert_sink")]
        assert writer["roles"] == ["fraud_alerts_writer"] and writer["password"] == "as-pw"
        # another data set's alert index: both roles cover it
        seen.clear()
        r = subprocess.run([bash, str(ES_SETUP)], capture_output=True, text=True, timeout=60,
                           env={**env, "ALERT_INDICES": "fraud-alerts machine-failure-alerts"})  # fmt: skip
        assert r.returncode == 0, r.stdout + r.stderr
        calls = {(m, p): b for m, p, b in seen if m != "GET"}
        for role in ("fraud_alerts_reader", "fraud_alerts_writer"):
            (indices,) = calls[("PUT", f"/_security/role/{role}")]["indices"]
            assert indices["names"] == [
                "fraud-alerts", "fraud-alerts-*", "machine-failure-alerts",
                "machine-failure-alerts-*",
            ]  # fmt: skip
        r = subprocess.run([bash, str(ES_SETUP)], capture_output=True, text=True, timeout=60,
                           env={**env, "ALERT_INDICES": 'bad" index'})  # fmt: skip
        assert r.returncode == 64 and "not an index name" in r.stderr
        # without the superuser's password nothing is created, and the script says so
        seen.clear()
        env.update(ELASTIC_PASSWORD="wrong", ES_SETUP_TIMEOUT="0")
        r = subprocess.run([bash, str(ES_SETUP)], env=env, capture_output=True, text=True,
                           timeout=60)  # fmt: skip
        assert r.returncode != 0 and "status=401" in r.stdout
    finally:
        server.shutdown()
        server.server_close()
