"""``python -m models``: train, evaluate, promote, list, sign, split, train-tf, profile,
retrain, watch.

Flags fall back to ``MODELS_*`` environment variables where noted
(``MODELS_REGISTRY``, ``MODELS_DATA_DIR``, ``MODELS_RUNS_DIR``). ``--profile NAME|PATH``
picks the data set (``profiles/NAME.toml``); without it, credit cards as always.

``python -m models profile ACTION``: the actions are the entries of
:data:`PROFILE_COMMANDS` (a parser builder and a handler each); a new action is one
more entry there.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from .errors import ModelsError

log = logging.getLogger("models.cli")


def _registry_default() -> str:
    from .registry import default_registry_root

    return str(default_registry_root())


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument("--profile", metavar="NAME|PATH", default=None,
                   help="data-set profile: a name in profiles/ or a TOML file (default: "
                        "credit cards)")  # fmt: skip


def _add_data_source(p: argparse.ArgumentParser) -> None:
    _add_profile(p)
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--csv",
        help="dataset CSV (credit cards: the Kaggle schema; with --profile: the profile's "
        "columns; default DATA_DIR/<profile>.csv if present)",
    )
    src.add_argument(
        "--synthetic-rows",
        type=int,
        help="use N rows of the profile's seeded synthetic generator (shipped profiles)",
    )
    p.add_argument("--data-dir", default=None,
                   help="where split CSVs are written (env MODELS_DATA_DIR; default data, "
                        "data/<profile> for a profile other than creditcard)")  # fmt: skip


def _data_dir(args, profile=None) -> str:
    """``--data-dir``, else ``$MODELS_DATA_DIR`` or ``data``; a profile other than the
    default one gets its own subfolder, so its splits never replace the credit-card ones
    the default publisher streams."""
    if args.data_dir:
        return args.data_dir
    from .profile import DEFAULT_PROFILE

    base = os.environ.get("MODELS_DATA_DIR", "data")
    if profile is not None and profile.name != DEFAULT_PROFILE:
        return os.path.join(base, profile.name)
    return base


def _profile(args):
    from .train import resolve_profile

    return resolve_profile(getattr(args, "profile", None))


def build_parser() -> argparse.ArgumentParser:
    from .pipelines import CANDIDATES, DEFAULT_CANDIDATES

    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=os.environ.get("MODELS_LOG_LEVEL", "warning"))
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="tune, compare and register candidates")
    t.add_argument("--name", default=_Default("creditcard"),
                   help="registered model name (default: the profile's name, creditcard)")  # fmt: skip
    _add_data_source(t)
    t.add_argument("--candidates", nargs="+", metavar="NAME",
                   help=f"candidates (default: {' '.join(DEFAULT_CANDIDATES)}; all: {' '.join(CANDIDATES)})")  # fmt: skip
    t.add_argument("--search", choices=("default", "full"), default="default",
                   help="full: every candidate (slower)")  # fmt: skip
    t.add_argument("--trials", type=int, default=None,
                   help="Optuna trials per candidate (default 4; 20 with --search full)")  # fmt: skip
    t.add_argument("--timeout", type=float, default=None, help="seconds of tuning per candidate")
    t.add_argument("--cv", type=int, default=3,
                   help="stratified CV folds for tuning and selection (default 3)")  # fmt: skip
    t.add_argument("--selection", choices=("cv", "validation"), default="cv",
                   help="cv (default): rank by CV over train+validation, threshold from "
                        "out-of-fold scores, refit on all of it; validation: rank and "
                        "threshold on validation.csv")  # fmt: skip
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--threshold-strategy", choices=("f1", "cost"), default="f1")
    t.add_argument("--review-cost", type=float, default=5.0,
                   help="cost of reviewing one alert, in value units (Amount for cards; cost "
                        "strategy, needs a profile with a value column)")  # fmt: skip
    t.add_argument("--time-split", action="store_true",
                   help="split by the order column (Time for cards) instead of stratified")  # fmt: skip
    t.add_argument(
        "--promote", metavar="ALIAS", help="promote the best candidate (e.g. production)"
    )
    t.add_argument("--registry", default=None, help="registry root (env MODELS_REGISTRY)")
    t.add_argument("--runs-dir", default=os.environ.get("MODELS_RUNS_DIR", "runs"))
    t.add_argument("--mlflow", action="store_true",
                   help="log to MLflow (also when MLFLOW_TRACKING_URI is set; default store runs/mlruns)")  # fmt: skip
    t.add_argument("--no-register", action="store_true", help="compare only; register nothing")

    e = sub.add_parser("evaluate", help="score the test split with a registered model")
    e.add_argument("name")
    e.add_argument("version", nargs="?", default="production", help="version or alias")
    e.add_argument("--registry", default=None)
    _add_profile(e)
    e.add_argument("--data-dir", default=None,
                   help="where the split CSVs are (env MODELS_DATA_DIR; default data, "
                        "data/<profile> for a profile other than creditcard)")  # fmt: skip
    e.add_argument(
        "--test-csv", default=None, help="split file to score (default DATA_DIR/test.csv)"
    )
    e.add_argument("--review-cost", type=float, default=None)
    e.add_argument("--runs-dir", default=os.environ.get("MODELS_RUNS_DIR", "runs"))
    e.add_argument("--json", action="store_true", help="print metrics as JSON")
    e.epilog = "Without --profile, the profile the model's card names is used."

    pr = sub.add_parser("promote", help="point an alias at a version")
    pr.add_argument("name")
    pr.add_argument("version")
    pr.add_argument("--alias", default="production")
    pr.add_argument("--registry", default=None)

    ls = sub.add_parser("list", help="list registered models")
    ls.add_argument("--registry", default=None)
    ls.add_argument("--json", action="store_true")

    sg = sub.add_parser(
        "sign",
        help="sign existing model cards with the registry key (MODELS_SIGNING_KEY_FILE or "
        "MODELS_SIGNING_KEY)",
    )
    sg.add_argument("name", nargs="?", help="model name (omit with --all)")
    sg.add_argument("versions", nargs="*", help="versions or aliases (default: every version)")
    sg.add_argument("--all", action="store_true", help="every version of every model")
    sg.add_argument("--registry", default=None)

    sp = sub.add_parser("split", help="write DATA_DIR/train.csv, validation.csv, test.csv")
    _add_data_source(sp)
    sp.add_argument("--seed", type=int, default=42)
    sp.add_argument("--time-split", action="store_true")

    tf = sub.add_parser(
        "train-tf",
        help="train the TensorFlow model and export it for TF Serving (numeric features only)",
    )
    tf.add_argument("--name", default=_Default("creditcard_tf"),
                    help="registered model name (default creditcard_tf, <profile>_tf)")  # fmt: skip
    _add_data_source(tf)
    tf.add_argument("--epochs", type=int, default=None)
    tf.add_argument("--seed", type=int, default=42)
    tf.add_argument("--serving-dir", default="models/serving")
    tf.add_argument("--promote", metavar="ALIAS")
    tf.add_argument("--registry", default=None)

    from .retrain import add_retrain_parser
    from .watch import add_watch_parser

    add_retrain_parser(sub, add_profile=_add_profile, default_marker=_Default)
    add_watch_parser(sub, add_profile=_add_profile)

    pf = sub.add_parser("profile", help="write, show and check data-set profiles")
    actions = pf.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, (build, _handler) in PROFILE_COMMANDS.items():
        build(actions, action)
    return parser


def _registry(args):
    from .registry import Registry

    return Registry(args.registry or _registry_default())


class _Default(str):
    """A flag's default value, told apart from the same value given on the command line."""


def cmd_train(args) -> int:
    from .train import TrainConfig, train

    profile = _profile(args)
    # the default name follows the profile (TrainConfig's None)
    name = None if isinstance(args.name, _Default) and profile is not None else args.name
    trials = args.trials if args.trials is not None else (20 if args.search == "full" else 4)
    config = TrainConfig(
        name=None if name is None else str(name),
        profile=profile,
        csv=args.csv,
        synthetic_rows=args.synthetic_rows,
        candidates=args.candidates,
        search=args.search,
        trials=trials,
        timeout=args.timeout,
        cv=args.cv,
        seed=args.seed,
        threshold_strategy=args.threshold_strategy,
        review_cost=args.review_cost,
        time_split=args.time_split,
        selection=args.selection,
        promote=args.promote,
        registry=args.registry or _registry_default(),
        data_dir=_data_dir(args, profile),
        runs_dir=args.runs_dir,
        mlflow=args.mlflow,
        register=not args.no_register,
    )
    result = train(config)
    if config.selection == "cv":
        how = (
            f"{config.cv}-fold CV AUPRC over train+validation (test figures at the threshold "
            f"chosen on out-of-fold scores, {config.threshold_strategy})"
        )
    else:
        how = (
            f"validation AUPRC (test figures at the validation threshold, "
            f"{config.threshold_strategy})"
        )
    print(f"\nCandidates ranked by {how}:\n")
    print(result.table_markdown)
    if result.card is not None:
        aliases = f" alias={config.promote}" if config.promote else ""
        print(f"registered {result.card.name} v{result.card.version} "
              f"({result.best.name}, threshold {result.card.threshold:.4f}){aliases}")  # fmt: skip
    print(f"reports: {result.run_dir}")
    return 0


def cmd_evaluate(args) -> int:
    from .train import evaluate_registered

    profile = _profile(args)
    if profile is None and not args.test_csv and not args.data_dir:
        from .registry import RegistryError
        from .train import card_profile

        # the data folder of the profile the model was trained for (an unknown model is
        # reported by evaluate_registered, after a missing test file)
        try:
            card = _registry(args).card(args.name, args.version)
        except RegistryError:
            card = None
        profile = card_profile(card) if card is not None else None
    test_csv = args.test_csv or os.path.join(_data_dir(args, profile), "test.csv")
    metrics, run_dir = evaluate_registered(
        _registry(args),
        args.name,
        args.version,
        test_csv=test_csv,
        review_cost=args.review_cost,
        runs_dir=args.runs_dir,
        profile=profile,
    )
    if args.json:
        print(json.dumps(metrics, indent=2, default=str))
    else:
        for k, v in metrics.items():
            print(f"{k:>18}: {v:.4f}" if isinstance(v, float) else f"{k:>18}: {v}")
        print(f"reports: {run_dir}")
    return 0


def cmd_promote(args) -> int:
    aliases = _registry(args).promote(args.name, args.version, args.alias)
    print(f"{args.name}: " + ", ".join(f"{a} -> v{v}" for a, v in sorted(aliases.items())))
    return 0


def cmd_list(args) -> int:
    rows = _registry(args).list()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print(f"no models in {_registry(args).root}")
        return 0
    print(f"{'name':<16} {'version':>7} {'aliases':<22} {'framework':<11} {'threshold':>9} "
          f"{'auprc':>7}  created")  # fmt: skip
    for r in rows:
        auprc = r["metrics"].get("auprc")
        print(
            f"{r['name']:<16} {r['version']:>7} {','.join(r['aliases']) or '-':<22} "
            f"{r['framework']:<11} {r['threshold'] or 0:>9.4f} "
            f"{auprc if auprc is None else format(auprc, '.4f'):>7}  {r['created']}"
        )
    return 0


def cmd_sign(args) -> int:
    reg = _registry(args)
    if args.all == bool(args.name):
        print("error: name a model, or pass --all", file=sys.stderr)
        return 2
    names = reg.models() if args.all else [args.name]
    for name in names:
        for v in args.versions or reg.versions(name):
            card = reg.sign(name, v)
            print(f"signed {name} v{card.version} key_id={card.data['signature']['key_id']}")
    return 0


def cmd_split(args) -> int:
    from .data import SPLIT_FILES, prepare_splits

    profile = _profile(args)
    data_dir = _data_dir(args, profile)
    splits = prepare_splits(
        data_dir,
        csv=args.csv,
        synthetic_rows=args.synthetic_rows,
        seed=args.seed,
        time_split=args.time_split,
        profile=profile,
    )
    print(f"source: {splits.source}")
    positives = "fraud" if profile is None else "positive"
    for part, s in splits.summary().items():
        print(
            f"{os.path.join(data_dir, SPLIT_FILES[part])}: {s['rows']} rows, {s['positives']} "
            f"{positives} ({s['positive_rate']:.4%})"
        )
    return 0


def cmd_train_tf(args) -> int:
    from models.tf_keras import cli_train_tf

    profile = _profile(args)
    if profile is not None and profile.categorical:
        names = ", ".join(repr(f.name) for f in profile.categorical)
        raise ModelsError(
            f"train-tf takes numeric features only; profile {profile.name!r} has categorical "
            f"feature(s) {names}: train it with `python -m models train --profile "
            f"{profile.name}` (its pipeline encodes them), or drop them in a copy of the profile"
        )
    args.profile = profile
    if isinstance(args.name, _Default) and profile is not None:
        args.name = f"{profile.name}_tf"
    args.name = str(args.name)
    args.data_dir = _data_dir(args, profile)
    return cli_train_tf(args)


# -- python -m models profile ... -------------------------------------------------------
def _build_profile_infer(actions, name: str) -> None:
    p = actions.add_parser(
        name,
        help="write a profile from a CSV (types inferred, categorical levels listed)",
        description="Every column not named as the id, the label, a tag or dropped becomes a "
        "feature. Lists (--drop, --categorical, --tags) are comma-separated; quote a name "
        "holding a comma CSV-style ('\"a,b\",c') or give it alone; a flag may be repeated.",
    )
    p.add_argument("--csv", required=True, help="the data set's CSV")
    p.add_argument("--name", required=True, help="profile name (lowercase, digits, _)")
    p.add_argument("--label", required=True, help="the 0/1 ground-truth column")
    p.add_argument("--id", default=None, help="a column with a unique id per row")
    p.add_argument("--drop", action="append", metavar="A,B", help="columns to ignore")
    p.add_argument("--categorical", action="append", metavar="C,D",
                   help="columns to treat as categorical even if numeric")  # fmt: skip
    p.add_argument("--tags", action="append", metavar="T,U",
                   help="columns sent as InfluxDB tags (never model inputs)")  # fmt: skip
    p.add_argument("--value", default=None,
                   help="numeric column whose sum measures what an alert saves (cost figures)")  # fmt: skip
    p.add_argument("--order", default=None, help="numeric column ordering rows in time")
    p.add_argument("--database", default=None, help="InfluxDB database (default: the name)")
    p.add_argument("-o", "--output", default=None,
                   help="write the TOML here (default: print it)")  # fmt: skip
    p.add_argument("--force", action="store_true", help="replace an existing --output file")


def cmd_profile_infer(args) -> int:
    from pathlib import Path

    from .data import parse_columns
    from .profile import ProfileError, infer_profile

    header = _csv_header(args.csv)
    out = Path(args.output) if args.output else None
    if out is not None and out.exists() and not args.force:
        raise ProfileError(f"{out} exists; pass --force to replace it")
    profile = infer_profile(
        args.csv,
        name=args.name,
        label=args.label,
        id=args.id,
        drop=parse_columns(args.drop, header),
        categorical=parse_columns(args.categorical, header),
        tags=parse_columns(args.tags, header),
        value=args.value,
        order=args.order,
        database=args.database,
    )
    if out is None:
        print(profile.to_toml(), end="")
        return 0
    profile.write(out)
    kinds = [f.type for f in profile.features]
    counts = ", ".join(
        f"{kinds.count(k)} {k}" for k in ("float", "int", "categorical") if k in kinds
    )
    print(
        f"wrote {out}: profile {profile.name}, {len(kinds)} features ({counts}), label "
        f"{profile.label!r}, id {profile.id_column!r}; review it, then "
        f"`python -m models profile show {out}`"
    )
    return 0


def _csv_header(path: str) -> list[str]:
    import csv

    from .profile import ProfileError

    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return [c.strip() for c in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise ProfileError(f"{path}: cannot read as CSV: {exc}") from None


def _build_profile_show(actions, name: str) -> None:
    p = actions.add_parser(name, help="print a profile (summary, --toml or --json)")
    p.add_argument("profile", metavar="PROFILE", help="a name in profiles/ or a TOML file")
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--toml", action="store_true", help="the profile as TOML")
    fmt.add_argument("--json", action="store_true", help="the profile as JSON")


def _profile_dict(profile) -> dict:
    return {
        "name": profile.name,
        "description": profile.description,
        "path": str(profile.path) if profile.path else None,
        "influxdb": {
            "database": profile.database,
            "retention_policy": profile.retention_policy,
            "measurement": profile.measurement,
            "scored_measurement": profile.scored_measurement,
        },
        "columns": {
            "id": profile.id,
            "id_field": profile.id_field,
            "label": profile.label,
            "label_field": profile.label_field,
            "value": profile.value,
            "order": profile.order,
            "tags": list(profile.tags),
            "drop": list(profile.drop),
        },
        "features": [f.to_dict() for f in profile.features],
        "alerts": {"index": profile.alert_index, "message_fields": list(profile.message_fields)},
    }


def cmd_profile_show(args) -> int:
    from .profile import load_profile

    profile = load_profile(args.profile)
    if args.toml:
        print(profile.to_toml(), end="")
        return 0
    if args.json:
        print(json.dumps(_profile_dict(profile), indent=2, ensure_ascii=False))
        return 0

    def names(values) -> str:
        # quoted: a name may hold a comma or a space
        return ", ".join(json.dumps(v, ensure_ascii=False) for v in values) if values else "-"

    where = f" ({profile.path})" if profile.path else ""
    lines = [f"profile {profile.name}{where}"]
    if profile.description:
        lines.append(f"  {profile.description}")
    id_text = profile.id if profile.id else f"{profile.id_field} (numbered by the publisher)"
    label = f"{profile.label} (field {profile.label_field})" if profile.label else "- (unlabelled)"
    lines += [
        f"database    {profile.database} (retention policy {profile.retention_policy})",
        f"measurement {profile.measurement} -> {profile.scored_measurement}",
        f"id          {id_text}",
        f"label       {label}",
        f"value       {profile.value or '-'}",
        f"order       {profile.order or '- (file order)'}",
        f"tags        {names(profile.tags)}",
        f"drop        {names(profile.drop)}",
        f"alerts      index {profile.alert_index}; message fields {names(profile.message_fields)}",
        f"features    {len(profile.features)}",
    ]
    width = max(len(f.name) for f in profile.features)
    for f in profile.features:
        levels = f"  {', '.join(f.levels)}" if f.categorical else ""
        lines.append(f"  {f.name:<{width}}  {f.type}{levels}")
    print("\n".join(lines))
    return 0


def _build_profile_validate(actions, name: str) -> None:
    p = actions.add_parser(
        name, help="check a profile (and, with --csv, a data file against it); exit 2 if bad"
    )
    p.add_argument("profile", metavar="PROFILE", help="a name in profiles/ or a TOML file")
    p.add_argument("--csv", default=None, help="also check this CSV against the profile")


def cmd_profile_validate(args) -> int:
    from .profile import load_profile

    profile = load_profile(args.profile)
    print(
        f"ok: profile {profile.name} ({profile.path or args.profile}): "
        f"{len(profile.features)} features, "
        f"{len(profile.categorical)} categorical"
    )
    if args.csv:
        from .data import load_csv

        df = load_csv(args.csv, profile=profile)
        line = f"ok: {args.csv}: {len(df)} rows"
        if profile.label is not None:
            line += f", {int(df[profile.label].sum())} positive ({profile.label} = 1)"
        print(line)
    return 0


#: ``python -m models profile ACTION``: ACTION -> (add its parser, run it). Another action
#: (e.g. ``tasks``) is one more entry: a function taking (subparsers, name) that adds its
#: parser, and a handler taking the parsed args and returning the exit status.
def _build_profile_tasks(actions, name: str) -> None:
    from .profile_tasks import add_tasks_parser

    add_tasks_parser(actions)


def cmd_profile_tasks(args) -> int:
    from .profile_tasks import cmd_tasks

    return cmd_tasks(args)


PROFILE_COMMANDS = {
    "infer": (_build_profile_infer, cmd_profile_infer),
    "show": (_build_profile_show, cmd_profile_show),
    "validate": (_build_profile_validate, cmd_profile_validate),
    "tasks": (_build_profile_tasks, cmd_profile_tasks),
}


def cmd_profile(args) -> int:
    return PROFILE_COMMANDS[args.action][1](args)


def cmd_retrain(args) -> int:
    from .retrain import cmd_retrain as run

    return run(args, name=None if isinstance(args.name, _Default) else str(args.name))


def cmd_watch(args) -> int:
    from .watch import cmd_watch as run

    return run(args, data_dir=lambda profile: _data_dir(args, profile))


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "promote": cmd_promote,
    "list": cmd_list,
    "sign": cmd_sign,
    "split": cmd_split,
    "train-tf": cmd_train_tf,
    "profile": cmd_profile,
    "retrain": cmd_retrain,
    "watch": cmd_watch,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.WARNING),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    from .backends import BackendError
    from .registry import RegistryError

    try:
        return COMMANDS[args.command](args)
    except (ModelsError, RegistryError, BackendError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
