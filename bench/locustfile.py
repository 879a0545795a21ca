"""Locust load test of the model REST API.

    .venv/bin/locust -f bench/locustfile.py --host http://127.0.0.1:5000 \\
        --headless -u 20 -r 5 -t 30s

Two user classes share the load: ``SingleRecordUser`` posts one record per request,
``BatchUser`` posts ``LOCUST_API_BATCH`` records (default 100). Records are random
finite values for the contract's features (``models.contract.FEATURES``); set
``LOCUST_API_VERSION`` to score with another version or alias (``?version=``).
"""

from __future__ import annotations

import itertools
import os
import random

from locust import HttpUser, between, task

from models.contract import FEATURES

BATCH = int(os.environ.get("LOCUST_API_BATCH", "100"))
VERSION = os.environ.get("LOCUST_API_VERSION") or None
_ids = itertools.count()


def _record(rng: random.Random) -> dict:
    rec = {name: rng.gauss(0.0, 1.5) for name in FEATURES}
    rec["Time"] = rng.uniform(0, 172_800)
    rec["Amount"] = round(rng.expovariate(1 / 90), 2)
    rec["txn_id"] = f"locust-{next(_ids)}"
    return rec


class _PredictUser(HttpUser):
    abstract = True
    wait_time = between(0.0, 0.05)
    batch = 1

    def on_start(self) -> None:
        self.rng = random.Random()
        self.params = {"version": VERSION} if VERSION else None

    def _post(self, body, name: str) -> None:
        with self.client.post(
            "/v1/predict", json=body, params=self.params, name=name, catch_response=True
        ) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}: {r.text[:200]}")
                return
            n = len(body) if isinstance(body, list) else 1
            if r.json().get("count") != n:
                r.failure(f"expected {n} predictions, got {r.json().get('count')}")


class SingleRecordUser(_PredictUser):
    weight = 3

    @task
    def predict_one(self) -> None:
        self._post(_record(self.rng), "/v1/predict [1]")


class BatchUser(_PredictUser):
    weight = 1

    @task
    def predict_batch(self) -> None:
        self._post([_record(self.rng) for _ in range(BATCH)], f"/v1/predict [{BATCH}]")
