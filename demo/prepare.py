"""Stage 1, ``prepare data``: the data set's split files through :mod:`models.data`.

The rows come from ``--csv``, else ``DATA_DIR/<profile>.csv`` when present
(``data/creditcard.csv``, the Kaggle file), else the profile's seeded generator. They are
split as ``python -m models split`` splits them (stratified 70/15/15) into the data set's
folder. A manifest records the source, so a later run reuses the split files while the
source and the files are unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from models.data import SPLIT_FILES, Splits, default_csv, load_split, prepare_splits
from models.profile import Profile

from .errors import DemoError
from .stage import Workspace

__all__ = ["MANIFEST", "PreparedData", "Source", "load_or_prepare_splits", "prepare_data"]

log = logging.getLogger("demo.prepare")

#: records where the split files came from, so a later run can reuse them
MANIFEST = ".splits-manifest.json"
#: how another data set's files are split; recorded so that files split otherwise
#: (by an earlier demo) are made again rather than reused
PROFILE_SPLIT = "models.data stratified 70/15/15"


def _stat(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


@dataclass(frozen=True)
class Source:
    """Where a data set's rows come from: a CSV, or ``synthetic_rows`` of its generator."""

    csv: Path | None
    synthetic_rows: int | None
    seed: int
    profile: Profile | None = None

    @classmethod
    def choose(
        cls,
        data_dir: Path,
        *,
        csv: Path | None,
        synthetic_rows: int,
        seed: int,
        use_default_csv: bool = True,
        profile: Profile | None = None,
    ) -> Source:
        """``csv``, else ``data_dir/<profile>.csv`` when present and ``use_default_csv``,
        else the seeded generator (which a profile must have)."""
        if csv is not None and not Path(csv).is_file():
            raise FileNotFoundError(f"dataset CSV {csv} does not exist")
        fallback = default_csv(data_dir, profile)
        if csv is None and use_default_csv and fallback.is_file():
            csv = fallback
        if csv is not None:
            return cls(Path(csv), None, seed, profile)
        if profile is not None:
            from models.synthetic import GENERATORS

            if profile.name not in GENERATORS:
                raise DemoError(
                    f"profile {profile.name!r} has no synthetic generator: pass --csv FILE "
                    f"with its columns ({', '.join(profile.csv_columns)})"
                )
        return cls(None, int(synthetic_rows), seed, profile)

    def descriptor(self) -> dict[str, Any]:
        """What the manifest compares: the same descriptor, the same rows."""
        if self.csv is not None:
            out: dict[str, Any] = {
                "csv": str(self.csv.resolve()),
                **_stat(self.csv),
                "seed": self.seed,
            }
        else:
            out = {"synthetic_rows": self.synthetic_rows, "seed": self.seed}
        if self.profile is not None:
            out |= {"profile": self.profile.name, "split": PROFILE_SPLIT}
        return out


def load_or_prepare_splits(data_dir: Path, source: Source) -> tuple[Splits, bool]:
    """Reuse the split files when the manifest says they came from ``source`` and they
    are unchanged; otherwise (re)write them. Returns (splits, reused)."""
    data_dir = Path(data_dir)
    profile = source.profile
    manifest_path = data_dir / MANIFEST
    paths = {part: data_dir / name for part, name in SPLIT_FILES.items()}
    descriptor = source.descriptor()
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = None
    if (
        manifest is not None
        and manifest.get("source") == descriptor
        and all(p.is_file() for p in paths.values())
        and manifest.get("files") == {part: _stat(p) for part, p in paths.items()}
    ):
        parts = [load_split(paths[part], profile=profile) for part in SPLIT_FILES]
        log.info("event=splits_reused dir=%s source=%s", data_dir, manifest.get("label"))
        return Splits(*parts, source=manifest.get("label", ""), profile=profile), True
    splits = prepare_splits(
        data_dir,
        csv=source.csv,
        synthetic_rows=source.synthetic_rows,
        seed=source.seed,
        profile=profile,
    )
    record = {
        "source": descriptor,
        "label": splits.source,
        "files": {part: _stat(p) for part, p in paths.items()},
    }
    tmp = manifest_path.with_name(manifest_path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, manifest_path)
    return splits, False


@dataclass
class PreparedData:
    splits: Splits
    reused: bool
    data_dir: Path
    source: Source
    #: the rows to replay: the test split, its first ``--n`` rows
    test: pd.DataFrame


def prepare_data(ws: Workspace) -> PreparedData:
    """The ``prepare data`` stage: the splits, and the test rows to replay."""
    config, dataset = ws.config, ws.dataset
    base = config.data_dir or (ws.tmp / "data" if config.small else Path("data"))
    data_dir = dataset.data_dir(base)
    source = Source.choose(
        data_dir,
        csv=config.csv,
        synthetic_rows=dataset.synthetic_rows(config),
        seed=config.seed,
        use_default_csv=not config.small,
        profile=dataset.data_profile,
    )
    splits, reused = load_or_prepare_splits(data_dir, source)
    test = splits.test
    if config.n is not None and config.n < len(test):
        test = test.iloc[: config.n].reset_index(drop=True)
    elif config.n is not None and config.n > len(test):
        ws.say(
            f"--n {config.n:,} is more than the test split's {len(test):,} rows; "
            "replaying every row once"
        )
    parts = ", ".join(
        f"{p} {v['rows']:,} ({v['positives']} {dataset.positives})"
        for p, v in splits.summary().items()
    )
    ws.say(f"{'reused' if reused else 'wrote'} splits in {data_dir} from {splits.source}: {parts}")
    return PreparedData(splits, reused, data_dir, source, test)
