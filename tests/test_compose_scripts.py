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
