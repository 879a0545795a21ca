"""TF Serving's REST API (``:8501``) through one reused HTTP session."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ...errors import BackendError, BackendUnavailable
from .spec import ServingSpec

__all__ = ["RestTransport"]


def _signature_from_json(sig: Mapping[str, Any]) -> dict[str, Any]:
    """Normalise one signature (REST metadata JSON) to ``{"inputs": {name: {dtype, shape}}}``."""

    def tensors(block: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        out = {}
        for key, info in (block or {}).items():
            shape_info = info.get("tensor_shape") or {}
            shape = (
                None
                if shape_info.get("unknown_rank")
                else [int(d.get("size", -1)) for d in shape_info.get("dim", [])]
            )
            out[key] = {"dtype": info.get("dtype", "DT_INVALID"), "shape": shape}
        return out

    return {"inputs": tensors(sig.get("inputs")), "outputs": tensors(sig.get("outputs"))}


class RestTransport:
    """TF Serving's REST API (``:8501``) through one reused HTTP session."""

    name = "rest"

    def __init__(self, base_url: str, *, session: Any = None) -> None:
        import requests

        self._requests = requests
        self.base_url = base_url.rstrip("/")
        self._session = session or requests.Session()

    def __repr__(self) -> str:
        return f"RestTransport({self.base_url!r})"

    def _model_url(self, spec: ServingSpec) -> str:
        url = f"{self.base_url}/v1/models/{spec.model_name}"
        if spec.version_label is not None:
            url += f"/labels/{spec.version_label}"
        elif spec.version is not None:
            url += f"/versions/{spec.version}"
        return url

    def _request(self, method: str, url: str, timeout: float, **kw: Any) -> Any:
        r = self._requests
        try:
            resp = self._session.request(method, url, timeout=timeout, **kw)
        except r.Timeout as exc:
            raise BackendUnavailable(f"DEADLINE_EXCEEDED: {url}", code="DEADLINE_EXCEEDED") from exc
        except r.ConnectionError as exc:
            raise BackendUnavailable(f"UNAVAILABLE: {url}: {exc}", code="UNAVAILABLE") from exc
        except r.RequestException as exc:
            raise BackendUnavailable(f"UNKNOWN: {url}: {exc}") from exc
        if resp.status_code != 200:
            code = {
                404: "NOT_FOUND",
                400: "INVALID_ARGUMENT",
                503: "UNAVAILABLE",
                504: "DEADLINE_EXCEEDED",
            }.get(resp.status_code, "UNKNOWN")
            try:
                body = resp.json()
            except ValueError:
                body = None
            # TF Serving answers {"error": "..."}; a proxy in front may answer anything.
            detail = body.get("error", resp.text) if isinstance(body, dict) else resp.text
            raise BackendUnavailable(
                f"{code}: HTTP {resp.status_code}: {str(detail)[:200]}", code=code
            )
        try:
            body = resp.json()
        except ValueError as exc:
            raise BackendError(f"TF Serving REST answered non-JSON from {url}") from exc
        if not isinstance(body, dict):
            raise BackendError(
                f"TF Serving REST answered a JSON {type(body).__name__}, not an object, from {url}"
            )
        return body

    def signatures(self, spec: ServingSpec, timeout: float) -> dict[str, dict[str, Any]]:
        body = self._request("GET", self._model_url(spec) + "/metadata", timeout)
        sigs = ((body.get("metadata") or {}).get("signature_def") or {}).get("signature_def") or {}
        return {name: _signature_from_json(sig) for name, sig in sigs.items()}

    def predict(self, spec: ServingSpec, X32: np.ndarray, timeout: float) -> np.ndarray:
        payload = {"signature_name": spec.signature_name, "inputs": {spec.input_name: X32.tolist()}}
        body = self._request("POST", self._model_url(spec) + ":predict", timeout, json=payload)
        outputs = body.get("outputs")
        if isinstance(outputs, Mapping):  # several outputs: keyed by name
            outputs = outputs.get(spec.output_name)
        if outputs is None:
            raise BackendError(f"REST predict for {spec.describe} returned no {spec.output_name!r}")
        return np.asarray(outputs, dtype=np.float64).reshape(-1)

    def close(self) -> None:
        self._session.close()
