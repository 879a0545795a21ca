#!/usr/bin/env python3
"""Smoke test of the running compose stack: one health request per service on 127.0.0.1.

    python compose/scripts/smoke.py [--env-file .env] [--host 127.0.0.1] [--timeout 5]

Prints a table (service, URL, status, detail) and exits 1 if any check fails. Credentials
come from the stack's .env. The UDF agent's metrics port is not published: its health is
read from Prometheus's scrape targets, which also proves the metrics wiring.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True, kw_only=True)
class Check:
    service: str
    path: str
    port: int
    #: judges the body of a 2xx answer: None when fine, else the problem
    verify: Callable[[bytes], str | None] = lambda body: None
    auth: tuple[str, str] | None = None
    #: status codes that count as healthy
    ok_status: tuple[int, ...] = (200, 204)


@dataclass(frozen=True, kw_only=True)
class Result:
    service: str
    url: str
    ok: bool
    detail: str


def read_env_file(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        values[key.strip()] = value.strip().strip("'\"")
    return values


def _json(body: bytes) -> object:
    return json.loads(body.decode("utf-8"))


def _es_health(body: bytes) -> str | None:
    status = _json(body).get("status")
    return None if status in ("green", "yellow") else f"cluster status {status}"


def _grafana_health(body: bytes) -> str | None:
    db = _json(body).get("database")
    return None if db == "ok" else f"database {db}"


def _tfserving(body: bytes) -> str | None:
    states = [v.get("state") for v in _json(body).get("model_version_status", [])]
    return None if "AVAILABLE" in states else f"model states {states}"


def _kibana(body: bytes) -> str | None:
    level = _json(body).get("status", {}).get("overall", {}).get("level")
    return None if level == "available" else f"overall {level}"


def _influx_db(body: bytes) -> str | None:
    return None if b'"fraud"' in body else "database fraud missing"


def _prometheus_targets(body: bytes) -> str | None:
    targets = _json(body).get("data", {}).get("activeTargets", [])
    health = {t.get("labels", {}).get("job"): t.get("health") for t in targets}
    bad = {job: h for job, h in health.items() if h != "up"}
    missing = {"udf-agent", "udf-supervisor", "alert-sink", "api"} - set(health)
    if missing or bad:
        return f"missing {sorted(missing)} down {bad}"
    return None


def checks(env: dict[str, str]) -> list[Check]:
    elastic = ("elastic", env.get("ELASTIC_PASSWORD", ""))
    influx = (env.get("INFLUXDB_ADMIN_USER", "admin"), env.get("INFLUXDB_ADMIN_PASSWORD", ""))
    return [
        Check(
            service="influxdb",
            port=8086,
            path="/query?q=SHOW%20DATABASES",
            auth=influx,
            verify=_influx_db,
        ),
        Check(service="kapacitor", port=9092, path="/kapacitor/v1/ping"),
        Check(service="chronograf", port=8888, path="/ping"),
        Check(
            service="elasticsearch",
            port=9200,
            path="/_cluster/health",
            auth=elastic,
            verify=_es_health,
        ),
        Check(service="kibana", port=5601, path="/api/status", auth=elastic, verify=_kibana),
        Check(service="grafana", port=3000, path="/api/health", verify=_grafana_health),
        Check(service="tfserving", port=8501, path="/v1/models/creditcard_tf", verify=_tfserving),
        Check(service="api", port=5000, path="/health"),
        Check(service="alert-sink", port=9000, path="/health"),
        Check(service="jupyter", port=10000, path="/api"),
        Check(service="prometheus", port=9090, path="/-/healthy"),
        Check(
            service="udf-agent, udf-supervisor (via prometheus)",
            port=9090,
            path="/api/v1/targets",
            verify=_prometheus_targets,
        ),
    ]


def run_check(check: Check, *, host: str, timeout: float) -> Result:
    url = f"http://{host}:{check.port}{check.path}"
    request = urllib.request.Request(url)
    if check.auth is not None:
        token = base64.b64encode(f"{check.auth[0]}:{check.auth[1]}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, body = exc.code, b""
    except (OSError, ValueError) as exc:  # refused, timeout, DNS
        reason = getattr(exc, "reason", exc)
        return Result(service=check.service, url=url, ok=False, detail=f"unreachable: {reason}")
    if status not in check.ok_status:
        return Result(service=check.service, url=url, ok=False, detail=f"HTTP {status}")
    try:
        problem = check.verify(body)
    except (ValueError, AttributeError) as exc:  # not the JSON we expect
        problem = f"unexpected body: {exc}"
    return Result(
        service=check.service, url=url, ok=problem is None, detail=problem or f"HTTP {status}"
    )


def format_table(results: list[Result]) -> str:
    rows = [("SERVICE", "URL", "STATUS", "DETAIL")]
    rows += [(r.service, r.url, "ok" if r.ok else "FAIL", r.detail) for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) if i < 3 else cell for i, cell in enumerate(row))
        for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env-file", type=Path, default=REPO_ROOT / ".env")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--timeout", type=float, default=5.0)
    args = parser.parse_args(argv)
    if not args.env_file.is_file():
        print(f"error: {args.env_file} not found; run `make env` first", file=sys.stderr)
        return 2
    env = read_env_file(args.env_file)
    results = [run_check(c, host=args.host, timeout=args.timeout) for c in checks(env)]
    print(format_table(results))
    failed = [r.service for r in results if not r.ok]
    print(
        f"\n{len(results) - len(failed)}/{len(results)} healthy"
        + (f"; failing: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
