"""Seeded synthetic data sets for the shipped profiles other than credit cards (whose
generator is :func:`models.data.make_synthetic`).

``make_machine_failure`` follows the published description of the AI4I 2020 predictive
maintenance data set (UCI): a milling machine producing L/M/H quality variants, air and
process temperatures from normalised random walks, torque around 40 Nm, a rotational
speed that falls as torque rises, tool wear that grows with every part and resets when
the tool is replaced, and five failure modes whose union is the label:

- TWF, tool wear failure: at a replacement time drawn between 200 and 240 minutes of
  wear, the tool is replaced, and in some of those cases it fails;
- HDF, heat dissipation failure: process minus air temperature below 8.6 K and a
  rotational speed below 1380 rpm;
- PWF, power failure: torque x angular speed below 3500 W or above 9000 W;
- OSF, overstrain failure: tool wear x torque above 11,000 (L), 12,000 (M) or 13,000 (H)
  minNm;
- RNF, random failure: 0.1 % of parts, whatever the readings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .errors import DataError

__all__ = ["GENERATORS", "MACHINE_FAILURE_COLUMNS", "generator_for", "make_machine_failure"]

MACHINE_FAILURE_COLUMNS = [
    "UDI",
    "Product ID",
    "Type",
    "Air temperature [K]",
    "Process temperature [K]",
    "Rotational speed [rpm]",
    "Torque [Nm]",
    "Tool wear [min]",
    "Machine failure",
    "TWF",
    "HDF",
    "PWF",
    "OSF",
    "RNF",
]

_WEAR_PER_PART = {"L": 2, "M": 3, "H": 5}
_OVERSTRAIN = {"L": 11_000.0, "M": 12_000.0, "H": 13_000.0}


def _random_walk(rng: np.random.Generator, n: int, mean: float, sd: float) -> np.ndarray:
    walk = np.cumsum(rng.normal(size=n))
    spread = walk.std()
    walk = (walk - walk.mean()) / (spread if spread > 0 else 1.0)
    return mean + sd * walk


def make_machine_failure(n_rows: int, *, seed: int = 0) -> pd.DataFrame:
    """``n_rows`` parts in the AI4I 2020 column layout; the same ``(n_rows, seed)``
    always gives the same frame. About 3 % of the parts fail."""
    n = int(n_rows)
    if n < 10:
        raise DataError(f"n_rows must be at least 10, got {n}")
    rng = np.random.default_rng(seed)
    types = rng.choice(np.array(["L", "M", "H"]), size=n, p=[0.5, 0.3, 0.2])
    serials = rng.integers(10_000, 100_000, size=n)
    air = np.round(_random_walk(rng, n, 300.0, 2.0), 1)
    process = np.round(air + 10.0 + _random_walk(rng, n, 0.0, 1.0), 1)
    torque = np.round(np.clip(rng.normal(40.0, 10.0, size=n), 3.8, None), 1)
    speed = 1538.8 - 15.9 * (torque - 40.0) + rng.normal(0.0, 85.0, size=n)
    speed = np.clip(np.rint(speed), 1168, 2886).astype(np.int64)

    wear = np.zeros(n, dtype=np.int64)
    twf = np.zeros(n, dtype=np.int64)
    current = 0
    replace_at = rng.integers(200, 241)
    for i in range(n):
        current += _WEAR_PER_PART[types[i]]
        if current >= replace_at:
            # replaced at this wear; in a bit under half of the cases it failed first
            twf[i] = int(rng.random() < 0.43)
            wear[i] = current
            current = 0
            replace_at = rng.integers(200, 241)
        else:
            wear[i] = current

    hdf = ((process - air) < 8.6) & (speed < 1380)
    power = torque * speed * 2.0 * np.pi / 60.0
    pwf = (power < 3500.0) | (power > 9000.0)
    limit = np.array([_OVERSTRAIN[t] for t in types])
    osf = wear * torque > limit
    rnf = rng.random(n) < 0.001
    modes = {
        "TWF": twf.astype(bool),
        "HDF": hdf,
        "PWF": pwf,
        "OSF": osf,
        "RNF": rnf,
    }
    failure = np.zeros(n, dtype=bool)
    for v in modes.values():
        failure |= v
    frame = {
        "UDI": np.arange(1, n + 1, dtype=np.int64),
        "Product ID": [f"{t}{s}" for t, s in zip(types, serials)],
        "Type": types,
        "Air temperature [K]": air,
        "Process temperature [K]": process,
        "Rotational speed [rpm]": speed,
        "Torque [Nm]": torque,
        "Tool wear [min]": wear,
        "Machine failure": failure.astype(np.int64),
        **{k: v.astype(np.int64) for k, v in modes.items()},
    }
    return pd.DataFrame(frame, columns=MACHINE_FAILURE_COLUMNS)


def _creditcard(n_rows: int, *, seed: int = 0) -> pd.DataFrame:
    from .data import make_synthetic

    return make_synthetic(n_rows, seed=seed)


#: the seeded generator of each shipped profile, by profile name: ``f(n_rows, seed=)``
GENERATORS = {
    "creditcard": _creditcard,
    "machine_failure": make_machine_failure,
}


def generator_for(profile_name: str):
    """The seeded generator of a shipped profile (``--synthetic-rows``); a DataError
    naming the profiles that have one otherwise."""
    try:
        return GENERATORS[profile_name]
    except KeyError:
        raise DataError(
            f"profile {profile_name!r} has no synthetic generator (only "
            f"{', '.join(sorted(GENERATORS))} do): pass the data set with --csv"
        ) from None
