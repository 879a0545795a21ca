#!/usr/bin/env python3
"""Container healthchecks for the Python services (the slim images have no curl).

    tick-healthcheck http URL [--header 'Name: value']   # 2xx within the timeout
    tick-healthcheck influx-recent --url URL --measurement M --within SECONDS
                                   [--username-env VAR --password-env VAR]

`influx-recent` passes when InfluxDB holds a point of the measurement newer than
--within seconds: for the publisher, "alive" means "writing", not just "running".
Standard library only; exit 0 healthy, 1 unhealthy (the reason goes to stdout, which
`docker inspect` shows in the health log).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request


def _get(url: str, *, headers: dict[str, str], timeout: float) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def check_http(url: str, *, headers: dict[str, str], timeout: float) -> str | None:
    status, _ = _get(url, headers=headers, timeout=timeout)
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def check_influx_recent(
    *,
    url: str,
    database: str,
    measurement: str,
    within: float,
    auth: tuple[str, str] | None,
    timeout: float,
) -> str | None:
    query = f'SELECT count(*) FROM "{measurement}" WHERE time > now() - {int(within)}s'
    params = urllib.parse.urlencode({"db": database, "q": query})
    headers = {}
    if auth is not None:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    status, body = _get(f"{url.rstrip('/')}/query?{params}", headers=headers, timeout=timeout)
    if status != 200:
        return f"InfluxDB query: HTTP {status} {body[:200]!r}"
    results = json.loads(body).get("results", [{}])
    if results and results[0].get("error"):
        return f"InfluxDB query: {results[0]['error']}"
    if not results or not results[0].get("series"):
        return f"no {measurement} point in the last {int(within)} s"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tick-healthcheck")
    parser.add_argument("--timeout", type=float, default=5.0)
    sub = parser.add_subparsers(dest="check", required=True)
    http = sub.add_parser("http")
    http.add_argument("url")
    http.add_argument("--header", action="append", default=[], help="'Name: value'")
    influx = sub.add_parser("influx-recent")
    influx.add_argument("--url", required=True)
    influx.add_argument("--database", default="fraud")
    influx.add_argument("--measurement", required=True)
    influx.add_argument("--within", type=float, default=120.0)
    influx.add_argument("--username-env", help="name of the variable holding the user")
    influx.add_argument("--password-env", help="name of the variable holding the password")
    args = parser.parse_args(argv)

    try:
        if args.check == "http":
            headers = dict(h.split(":", 1) for h in args.header)
            headers = {k.strip(): v.strip() for k, v in headers.items()}
            problem = check_http(args.url, headers=headers, timeout=args.timeout)
        else:
            auth = None
            if args.username_env and os.environ.get(args.username_env):
                auth = (os.environ[args.username_env], os.environ.get(args.password_env or "", ""))
            problem = check_influx_recent(
                url=args.url,
                database=args.database,
                measurement=args.measurement,
                within=args.within,
                auth=auth,
                timeout=args.timeout,
            )
    except (OSError, ValueError) as exc:  # refused, timeout, DNS, bad JSON
        problem = f"{type(exc).__name__}: {exc}"
    if problem:
        print(f"unhealthy: {problem}")
        return 1
    print("healthy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
