"""The data set a run is about: its profile and what follows from it, stage by stage.

Credit cards are the ``creditcard`` profile. Without ``--profile`` (or with
``--profile creditcard``) every stage behaves as it always has for them: the
credit-card contract's split files, points and alert task (``fraud_alert.tick``); the
model card records the profile all the same. Any other profile names the data folder,
the points' types, the publisher's and the sink's ``--profile``, and the alert texts of
its Kapacitor task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models import contract
from models.profile import DEFAULT_PROFILE, PROFILES_DIR, Profile, load_profile

from .config import DemoConfig

__all__ = ["DEFAULT_MODEL", "Dataset"]

#: ``--model``'s default; with another profile it stands for the profile's name
DEFAULT_MODEL = "creditcard"

_PROFILE_ROWS, _PROFILE_SMALL_ROWS = 10_000, 5_000


def _same_file(a: Path, b: Path) -> bool:
    try:
        return Path(a).resolve() == Path(b).resolve()
    except OSError:
        return False


@dataclass(frozen=True)
class Dataset:
    profile: Profile

    @classmethod
    def load(cls, ref: str | Path | None) -> Dataset:
        """The profile named (a name in profiles/ or a TOML path); None: credit cards."""
        return cls(load_profile(ref))

    # -- what it is -----------------------------------------------------------------
    @property
    def is_cards(self) -> bool:
        """The credit-card data set: everything as without a profile."""
        return self.profile.name == DEFAULT_PROFILE

    @property
    def data_profile(self) -> Profile | None:
        """What models.data and the replay driver take: None means the credit-card
        contract, exactly as without a profile."""
        return None if self.is_cards else self.profile

    @property
    def ref(self) -> str:
        """How the services and commands name the profile: its name when it is the one
        of that name in the profiles folder, else its file."""
        p = self.profile
        if p.path is None or _same_file(p.path, PROFILES_DIR / f"{p.name}.toml"):
            return p.name
        return str(p.path)

    @property
    def positives(self) -> str:
        return "fraud" if self.is_cards else "positive"

    @property
    def label(self) -> str:
        if self.profile.label is None:
            raise ValueError(
                f"profile {self.profile.name!r} names no label column (columns.label): the "
                "demo measures its alerts against the labels"
            )
        return self.profile.label

    def model_name(self, model: str) -> str:
        """``--model``, whose default stands for the profile's own model."""
        return self.profile.name if model == DEFAULT_MODEL else model

    def data_dir(self, base: Path) -> Path:
        """Split files of credit cards in ``base``, another data set's in ``base/NAME``
        (as ``python -m models split|train --profile NAME`` writes them)."""
        return Path(base) if self.is_cards else Path(base) / self.profile.name

    def synthetic_rows(self, config: DemoConfig) -> int:
        """Rows of the generator: ``--synthetic-rows``, else 100,000 credit-card rows
        (20,000 with ``--small``) or 10,000 of another data set (5,000)."""
        if self.is_cards or config.synthetic_rows is not None:
            return config.rows_for_synthetic
        return _PROFILE_SMALL_ROWS if config.small else _PROFILE_ROWS

    # -- the services -----------------------------------------------------------------
    def publisher_args(self) -> list[str]:
        if self.is_cards:
            return ["--database", contract.DATABASE]
        return ["--profile", self.ref]

    def sink_args(self) -> list[str]:
        return [] if self.is_cards else ["--profile", self.ref]

    # -- points -----------------------------------------------------------------------
    def input_fields(self, row: dict[str, Any]) -> dict[str, Any]:
        """A row's features as the input point carries them (float, int, string)."""
        fields: dict[str, Any] = {}
        for f in self.profile.features:
            v = row.get(f.name)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            if f.categorical:
                fields[f.name] = str(v)
            elif f.type == "int":
                fields[f.name] = int(v)
            else:
                fields[f.name] = float(v)
        return fields

    def value(self, row: dict[str, Any]) -> float:
        """The row's value column (``Amount``), 0 when the data set has none."""
        if self.profile.value is None:
            return 0.0
        try:
            return float(row.get(self.profile.value))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return 0.0

    def alert_texts(self) -> dict[str, str] | None:
        """The alert task's id, message and details templates; None: the credit-card
        task's own (tickscripts/templates/fraud_alert.tick)."""
        if self.is_cards:
            return None
        from models.profile_tasks import alert_texts

        return alert_texts(self.profile)

    # -- the report ---------------------------------------------------------------------
    def report_section(self) -> dict[str, Any] | None:
        """The report's ``profile`` section (credit cards have none)."""
        if self.is_cards:
            return None
        p = self.profile
        return {
            "name": p.name,
            "measurement": p.measurement,
            "scored_measurement": p.scored_measurement,
            "database": p.database,
            "id": p.id_column,
            "label": p.label_field,
            "value": p.value,
            "alert_index": p.alert_index,
        }
