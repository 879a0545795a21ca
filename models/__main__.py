"""``python -m models``: train, evaluate, promote, list, sign, split, train-tf, profile.

Flags fall back to ``MODELS_*`` environment variables where noted
(``MODELS_REGISTRY``, ``MODELS_DATA_DIR``, ``MODELS_RUNS_DIR``).
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


def _add_data_source(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument(
        "--csv", help="dataset CSV with the Kaggle schema (default: data/creditcard.csv if present)"
    )
    src.add_argument(
        "--synthetic-rows", type=int, help="use N rows of the seeded synthetic generator"
    )
    p.add_argument("--data-dir", default=os.environ.get("MODELS_DATA_DIR", "data"),
                   help="where split CSVs are written (env MODELS_DATA_DIR; default data)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from .pipelines import CANDIDATES, DEFAULT_CANDIDATES

    parser = argparse.ArgumentParser(prog="python -m models", description=__doc__.splitlines()[0])
    parser.add_argument("--log-level", default=os.environ.get("MODELS_LOG_LEVEL", "warning"))
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="tune, compare and register candidates")
    t.add_argument("--name", default="creditcard", help="registered model name")
    _add_data_source(t)
    t.add_argument("--candidates", nargs="+", metavar="NAME",
                   help=f"candidates (default: {' '.join(DEFAULT_CANDIDATES)}; all: {' '.join(CANDIDATES)})")  # fmt: skip
    t.add_argument("--search", choices=("default", "full"), default="default",
                   help="full: every candidate (slower)")  # fmt: skip
    t.add_argument("--trials", type=int, default=None,
                   help="Optuna trials per candidate (default 4; 20 with --search full)")  # fmt: skip
    t.add_argument("--timeout", type=float, default=None, help="seconds of tuning per candidate")
    t.add_argument("--cv", type=int, default=3, help="stratified CV folds for tuning")
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--threshold-strategy", choices=("f1", "cost"), default="f1")
    t.add_argument("--review-cost", type=float, default=5.0,
                   help="cost of reviewing one alert, in Amount units (cost strategy)")  # fmt: skip
    t.add_argument("--time-split", action="store_true", help="split by Time instead of stratified")
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
    e.add_argument("--data-dir", default=os.environ.get("MODELS_DATA_DIR", "data"))
    e.add_argument(
        "--test-csv", default=None, help="split file to score (default DATA_DIR/test.csv)"
    )
    e.add_argument("--review-cost", type=float, default=None)
    e.add_argument("--runs-dir", default=os.environ.get("MODELS_RUNS_DIR", "runs"))
    e.add_argument("--json", action="store_true", help="print metrics as JSON")

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

    sp = sub.add_parser("split", help="write data/train.csv, validation.csv, test.csv")
    _add_data_source(sp)
    sp.add_argument("--seed", type=int, default=42)
    sp.add_argument("--time-split", action="store_true")

    tf = sub.add_parser("train-tf", help="train the TensorFlow model and export it for TF Serving")
    tf.add_argument("--name", default="creditcard_tf")
    _add_data_source(tf)
    tf.add_argument("--epochs", type=int, default=None)
    tf.add_argument("--seed", type=int, default=42)
    tf.add_argument("--serving-dir", default="models/serving")
    tf.add_argument("--promote", metavar="ALIAS")
    tf.add_argument("--registry", default=None)

    pf = sub.add_parser("profile", help="data-set profiles")
    pf_sub = pf.add_subparsers(dest="profile_command", required=True)
    from .profile_tasks import add_tasks_parser

    add_tasks_parser(pf_sub)
    return parser


def _registry(args):
    from .registry import Registry

    return Registry(args.registry or _registry_default())


def cmd_train(args) -> int:
    from .train import TrainConfig, train

    trials = args.trials if args.trials is not None else (20 if args.search == "full" else 4)
    config = TrainConfig(
        name=args.name,
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
        promote=args.promote,
        registry=args.registry or _registry_default(),
        data_dir=args.data_dir,
        runs_dir=args.runs_dir,
        mlflow=args.mlflow,
        register=not args.no_register,
    )
    result = train(config)
    print(f"\nCandidates ranked by validation AUPRC (test figures at the validation threshold, "
          f"{config.threshold_strategy}):\n")  # fmt: skip
    print(result.table_markdown)
    if result.card is not None:
        aliases = f" alias={config.promote}" if config.promote else ""
        print(f"registered {result.card.name} v{result.card.version} "
              f"({result.best.name}, threshold {result.card.threshold:.4f}){aliases}")  # fmt: skip
    print(f"reports: {result.run_dir}")
    return 0


def cmd_evaluate(args) -> int:
    from pathlib import Path

    from .train import evaluate_registered

    test_csv = args.test_csv or str(Path(args.data_dir) / "test.csv")
    metrics, run_dir = evaluate_registered(
        _registry(args),
        args.name,
        args.version,
        test_csv=test_csv,
        review_cost=args.review_cost,
        runs_dir=args.runs_dir,
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

    splits = prepare_splits(
        args.data_dir,
        csv=args.csv,
        synthetic_rows=args.synthetic_rows,
        seed=args.seed,
        time_split=args.time_split,
    )
    print(f"source: {splits.source}")
    for part, s in splits.summary().items():
        print(
            f"{args.data_dir}/{SPLIT_FILES[part]}: {s['rows']} rows, {s['positives']} fraud "
            f"({s['positive_rate']:.4%})"
        )
    return 0


def cmd_train_tf(args) -> int:
    from models.tf_keras import cli_train_tf

    return cli_train_tf(args)


def cmd_profile(args) -> int:
    if args.profile_command == "tasks":
        from .profile_tasks import cmd_tasks

        return cmd_tasks(args)
    raise ModelsError(f"unknown profile command {args.profile_command!r}")


COMMANDS = {
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "promote": cmd_promote,
    "list": cmd_list,
    "sign": cmd_sign,
    "split": cmd_split,
    "train-tf": cmd_train_tf,
    "profile": cmd_profile,
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
