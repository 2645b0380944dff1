"""The ``rcnnlib`` command line: every subcommand's parser and handler, in one place.

Every user-facing failure is an :class:`~rcnnlib.errors.InputError`: it is
printed as one line (``rcnnlib: error: <file>: <problem>``) and the command
exits with status 2, without a traceback.

Parsers import nothing heavy: each handler imports the pipeline it drives, so
``rcnnlib --help`` and argument errors answer at once, and a command loads
TensorFlow or scikit-learn only when it uses them. Defaults shown in ``--help``
are written here; ``tests/test_cli.py`` checks them against the library's.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from rcnnlib.errors import InputError
from rcnnlib.logs import VERBOSE_ENV, configure_logging

CLASS_NAMES = ("SN", "RRL", "CEP", "EB", "NV", "AST", "EMPTY")  # = rcnnlib.classes.CLASS_NAMES (tested)
SURVEY_PRESETS = ("hits2015", "ztf", "lsst")
MAG_SLOPE = 0.3  # = rcnnlib.sim.lightcurves.ALPHA: the survey's source counts
TRAIN_DEFAULTS = {"epochs": 4, "batch_size": 128, "patience": 2, "learning_rate_decay": "none"}
LEARNING_RATE_DECAYS = ("cosine", "none")
N_ESTIMATORS = 200  # = rcnnlib.forest.baseline.N_ESTIMATORS
SN_SUBSETS = ("all", "brighter")
FETCH_WORKERS = 8
HITS_URL_ENV = "RCNNLIB_HITS_URL"

Handler = Callable[[argparse.Namespace], int]


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as every other error of the command line: one line, exit status 2.

    argparse prints the whole usage before its message; the usage is one ``--help`` away.
    """

    def error(self, message: str) -> NoReturn:
        message = re.sub(r"^argument ([^:]+): ", r"\1 ", message)  # "--seed must be ..."
        self.exit(2, f"rcnnlib: error: {message} (see {self.prog} --help)\n")


# ---------------------------------------------------------------------- argument types
def _whole_number(minimum: int, wording: str) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``minimum``, refused in one line while parsing."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be {wording}, got {text!r}")
        return value

    return parse


seed = _whole_number(0, "a non-negative integer (>= 0)")  # numpy refuses negative seeds with a traceback
positive_int = _whole_number(1, "a positive whole number")
count = _whole_number(0, "a whole number >= 0")


def _hits_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--hits-dir",
        type=Path,
        default=None,
        help="real HiTS folder (default: $RCNNLIB_HITS_DIR or ../shared/hits)",
    )


def _json_file_argument(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--json", type=Path, default=None, metavar="FILE", help=f"write {what} here (atomically)"
    )


def _write_json(path: Path | None, payload: object) -> None:
    from rcnnlib.outputs import write_atomic

    if path is not None:
        write_atomic(path, json.dumps(payload, indent=2) + "\n")


def _check_json_file(path: Path | None) -> None:
    """Before minutes of work, not after: the output file must be writable."""
    if path is not None:
        from rcnnlib.outputs import check_output_file

        check_output_file(path)


# ---------------------------------------------------------------------- real data
def _add_hits_info(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hits-info",
        help="summarise the real HiTS sequences (counts, epochs, estimated conditions)",
        description="Read the real HiTS folder and summarise its labelled sequences.",
    )
    _hits_dir_argument(p)
    p.add_argument("--sn-subset", choices=SN_SUBSETS, default="all", help="supernova subset to read")
    _json_file_argument(p, "the summary as JSON")
    p.set_defaults(func=_hits_info)


def _hits_info(args: argparse.Namespace) -> int:
    from rcnnlib.hits.loader import format_epoch_stats, hits_epoch_stats, load_hits

    _check_json_file(args.json)
    ds = load_hits(args.hits_dir, sn_subset=args.sn_subset)
    stats = hits_epoch_stats(ds)
    stats.update({k: ds.metadata[k] for k in ("source", "hits_dir", "sn_subset")})
    print(format_epoch_stats(stats))
    _write_json(args.json, stats)
    return 0


def _add_fetch_hits(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fetch-hits",
        help="download the real HiTS files and verify them against the packaged sha256 list",
        description=(
            "Download the real HiTS 2015 files of github.com/rodrigcd/HiTS_simulations at a pinned "
            "commit and verify each one by sha256. Files already present are kept; interrupted "
            "downloads resume. Afterwards, point RCNNLIB_HITS_DIR to the folder."
        ),
    )
    p.add_argument(
        "--dest",
        type=Path,
        default=Path("data") / "hits",
        metavar="DIR",
        help="folder to download into (default: data/hits under the current directory)",
    )
    p.add_argument(
        "--base-url",
        default=None,
        metavar="URL",
        help=f"where the files are: http(s)://, file:// or a folder (default: ${HITS_URL_ENV} if set, "
        "else the pinned GitHub commit)",
    )
    p.add_argument(
        "--include",
        nargs="+",
        action="extend",
        metavar="PATTERN",
        help="only files whose manifest path starts with PATTERN or matches it as a glob "
        "(e.g. real_obs/HiTS_tables/ or 'real_obs/real_stamps/*/lightcurves/*'); repeatable",
    )
    p.add_argument("--retries", type=int, default=3, help="extra attempts per file (default: 3)")
    p.add_argument(
        "--workers", type=int, default=FETCH_WORKERS, help=f"parallel downloads (default: {FETCH_WORKERS})"
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress bar (there is none when stderr is not a terminal)",
    )
    p.set_defaults(func=_fetch_hits)


def _fetch_hits(args: argparse.Namespace) -> int:
    from rcnnlib.hits.fetch import DIR_ENV, fetch_hits

    report = fetch_hits(
        args.dest,
        base_url=args.base_url,
        include=args.include,
        # A bar on a non-terminal (CI logs, captured stderr) is noise around the one-line error.
        progress=not args.no_progress and sys.stderr.isatty(),
        retries=args.retries,
        workers=args.workers,
    )
    print(report.summary())
    print(f"Point {DIR_ENV} to it: export {DIR_ENV}={report.dest.resolve()}")
    return 0


# ---------------------------------------------------------------------- simulator
def _add_simulate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("simulate", help="simulate image sequences of the seven classes into a shard folder")
    p.add_argument(
        "--survey", default="hits2015", help=f"preset ({', '.join(SURVEY_PRESETS)}) or a survey YAML file"
    )
    p.add_argument("--n-per-class", type=int, required=True, help="sequences per class per field")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--out", type=Path, required=True, help="output folder (shards + manifest.json)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes")
    p.add_argument("--scheduler", default=None, help="address of a running Dask scheduler")
    p.add_argument("--classes", nargs="+", default=list(CLASS_NAMES), metavar="CLASS")
    p.add_argument("--fields", nargs="+", default=None, metavar="FIELD", help="restrict to these fields")
    p.add_argument("--shard-size", type=int, default=2500)
    p.add_argument(
        "--mag-slope",
        type=float,
        default=MAG_SLOPE,
        help=f"slope of the stars' magnitude power law: {MAG_SLOPE} follows the survey's counts (default), "
        "0 is flat in magnitude (what the shipped model was trained on)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace --out if it is a dataset of this package (only then)",
    )
    p.set_defaults(func=_simulate)


def _simulate(args: argparse.Namespace) -> int:
    import time

    if args.scheduler:
        _needs_extra("dask", "dask", "distributed")

    from rcnnlib.sim.simulate import simulate_to_disk

    start = time.perf_counter()
    ds = simulate_to_disk(
        args.survey,
        args.out,
        args.n_per_class,
        seed=args.seed,
        workers=args.workers,
        scheduler=args.scheduler,
        classes=tuple(args.classes),
        fields=args.fields,
        shard_size=args.shard_size,
        overwrite=args.overwrite,
        progress=True,
        mag_slope=args.mag_slope,
    )
    elapsed = time.perf_counter() - start
    counts = ", ".join(f"{k} {v}" for k, v in ds.class_counts().items())
    print(f"wrote {len(ds)} sequences in {len(ds.shards)} shards to {args.out} ({counts})")
    print(f"{elapsed:.1f} s, {len(ds) / elapsed:,.0f} sequences/s")
    print(f"fingerprint {ds.fingerprint}")
    return 0


# ---------------------------------------------------------------------- classifier
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train the RCNN on simulated shards (rcnnlib simulate)")
    p.add_argument("simulations", type=Path, help="shard folder written by `rcnnlib simulate`")
    p.add_argument("--out", type=Path, required=True, help="folder for model.keras and card.json")
    p.add_argument("--epochs", type=positive_int, default=TRAIN_DEFAULTS["epochs"])
    p.add_argument("--batch-size", type=positive_int, default=TRAIN_DEFAULTS["batch_size"])
    p.add_argument("--patience", type=int, default=TRAIN_DEFAULTS["patience"])
    p.add_argument(
        "--lr-decay",
        choices=LEARNING_RATE_DECAYS,
        default=TRAIN_DEFAULTS["learning_rate_decay"],
        help="learning-rate schedule over the planned epochs (default: none, constant; "
        "the shipped model: cosine over 10 epochs)",
    )
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--no-augment", action="store_true", help="train without augmentation")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from rcnnlib.rcnn.preprocess import Augmentation
    from rcnnlib.rcnn.train import TrainConfig, check_model_folder, train

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        patience=args.patience,
        learning_rate_decay=args.lr_decay,
        seed=args.seed,
        augmentation=None if args.no_augment else Augmentation(),
    )
    check_model_folder(args.out)
    command = (
        "rcnnlib " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["train"] else None
    )
    card = train(args.simulations, args.out, config, command=command)
    print(
        json.dumps(
            {k: getattr(card, k) for k in ("training_time_s", "epochs_run", "best_epoch", "validation")}
        )
    )
    return 0


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="recall of the RCNN on real sequences (sim-only and fine-tuned)")
    _hits_dir_argument(p)
    p.add_argument("--model", type=Path, default=None, help="saved model folder (default: the shipped one)")
    p.add_argument(
        "--finetune-per-class",
        type=count,
        nargs="+",
        default=[10],
        metavar="N",
        help="real sequences per class to fine-tune on (default 10; 0: none); several values "
        "(e.g. 0 1 2 5 10 20) give a learning curve, every value on the draws `rcnnlib baseline` uses",
    )
    p.add_argument("--repeats", type=positive_int, default=5)
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument(
        "--base-weight",
        type=float,
        default=None,
        help="weight of the simulation-only model in the fine-tuned prediction (default 0.5; 0: none)",
    )
    _json_file_argument(p, "the scores")
    p.set_defaults(func=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
    if args.base_weight is not None and not 0.0 <= args.base_weight <= 1.0:  # NaN fails this too
        raise InputError(f"--base-weight must lie in [0, 1], got {args.base_weight}")
    _check_json_file(args.json)  # before the minutes of fine-tuning, not after
    from rcnnlib.hits.loader import load_hits
    from rcnnlib.rcnn.evaluate import (
        evaluate_on_real,
        learning_curve,
        learning_curve_json,
        learning_curve_table,
        recall_table,
    )
    from rcnnlib.rcnn.train import FineTuneConfig

    real = load_hits(args.hits_dir, progress=sys.stderr.isatty())
    tune = FineTuneConfig() if args.base_weight is None else FineTuneConfig(base_weight=args.base_weight)
    options: dict[str, Any] = dict(finetune_config=tune, progress=sys.stderr.isatty())
    if len(args.finetune_per_class) == 1:
        result = evaluate_on_real(
            real, args.model, args.finetune_per_class[0], args.repeats, args.seed, **options
        )
        print(recall_table(result))
        _write_json(args.json, result.to_json())
        return 0
    curve = learning_curve(real, args.model, args.finetune_per_class, args.repeats, args.seed, **options)
    print(learning_curve_table(curve))
    _write_json(args.json, learning_curve_json(curve))
    return 0


def _add_classify(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("classify", help="class probabilities per time step for your own sequences")
    p.add_argument("input", type=Path, help=".npz, .h5/.hdf5 or .fits (see `rcnnlib.rcnn.classify`)")
    p.add_argument("--model", type=Path, default=None, help="saved model folder (default: the shipped one)")
    _json_file_argument(p, "the probabilities")
    p.set_defaults(func=_classify)


def _classify(args: argparse.Namespace) -> int:
    _check_json_file(args.json)  # before the model loads, not after the work
    from rcnnlib.rcnn.classify import classify, format_table, read_sequences

    ds = read_sequences(args.input)
    results = classify(ds, args.model)
    print(format_table(results, CLASS_NAMES))
    _write_json(args.json, results)
    return 0


# ---------------------------------------------------------------------- baseline
def _add_baseline(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "baseline",
        help="light-curve random forest: recall on real HiTS, sim-only and augmented",
        description="The light-curve random-forest baseline of the paper, on real HiTS sequences.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    _hits_dir_argument(p)
    p.add_argument("--augment-per-class", type=int, default=10, help="real sequences per class added")
    p.add_argument("--repeats", type=positive_int, default=10, help="random draws of the augmented protocol")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--n-sim-per-class", type=int, default=1000, help="simulated training sequences per class")
    p.add_argument("--fields", nargs="+", default=None, help="simulate these fields only (default: all)")
    p.add_argument("--n-estimators", type=positive_int, default=N_ESTIMATORS, help="trees per forest")
    p.add_argument(
        "--train-classes",
        nargs="+",
        default=list(CLASS_NAMES),
        metavar="CLASS",
        help="simulated classes to train on (default: all seven, like the RCNN)",
    )
    _json_file_argument(p, "the recalls")
    p.set_defaults(func=_baseline)


def _baseline(args: argparse.Namespace) -> int:
    if args.augment_per_class < 0:
        raise InputError(f"--augment-per-class must be >= 0, got {args.augment_per_class}")
    _check_json_file(args.json)  # before the minutes of simulation and tuning, not after
    from rcnnlib.forest.baseline import format_result, run_baseline

    result = run_baseline(
        args.hits_dir,
        n_sim_per_class=args.n_sim_per_class,
        augment_per_class=args.augment_per_class,
        repeats=args.repeats,
        seed=args.seed,
        fields=args.fields,
        n_estimators=args.n_estimators,
        train_classes=args.train_classes,
        progress=True,
    )
    print(format_result(result))
    _write_json(args.json, result.to_json())
    return 0


# ---------------------------------------------------------------------- book
def _add_book(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "book",
        help="execute the notebooks with a parameter profile (cached) and build the HTML book",
        description="Execute the stage notebooks with a parameter profile, re-running only stages whose "
        "parameters, code or data changed, then build the HTML book.",
    )
    p.add_argument("--profile", default="default", help="params/<NAME>.yaml: ci, default or paper")
    p.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        metavar=("KEY", "VALUE"),
        default=[],
        help="override a parameter (KEY or NOTEBOOK.KEY); VALUE is read as YAML (3, 0.5, true, null)",
    )
    p.add_argument("--build-dir", type=Path, help="output folder (default build/<profile>)")
    p.add_argument(
        "--only",
        nargs="+",
        metavar="NOTEBOOK",
        help="bring only these notebooks up to date (and the earlier ones they read, if out of date)",
    )
    p.add_argument("--force", action="store_true", help="re-execute the selected notebooks even if cached")
    p.add_argument(
        "--dry-run", action="store_true", help="only say which notebooks would run, and why; change nothing"
    )
    p.add_argument("--no-html", action="store_true", help="execute the notebooks but skip jupyter-book")
    p.add_argument(
        "--pdf",
        action="store_true",
        help="also print the whole book to <build-dir>/book.pdf (headless Chromium)",
    )
    p.set_defaults(func=_book)


def _needs_extra(extra: str, *modules: str) -> None:
    """One line instead of a ModuleNotFoundError when an optional part is not installed."""
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise InputError(f"needs {', '.join(missing)}: pip install 'rcnnlib[{extra}]'")


def _book(args: argparse.Namespace) -> int:
    _needs_extra("book", "papermill", "jupyter_book", "matplotlib", "ipykernel")
    from rcnnlib.book.profiles import parse_overrides
    from rcnnlib.book.runner import run_book

    result = run_book(
        profile=args.profile,
        overrides=parse_overrides(args.param),
        build_dir=args.build_dir,
        only=args.only,
        html=not args.no_html,
        force=args.force,
        dry_run=args.dry_run,
        pdf=args.pdf and not args.no_html,
    )
    if args.dry_run:
        would = [s.stage for s in result.stages if s.status == "would run"]
        print(f"would run {', '.join(would) or 'nothing'}; nothing was executed")
        return 0
    ran = ", ".join(result.executed) or "nothing"
    print(f"executed {ran}; {len(result.cached)} stage(s) from the cache; {result.seconds:.0f} s in all")
    if result.html:
        print(f"book: {result.html / 'index.html'}")
    else:
        print(f"executed notebooks in {result.build_dir / 'book'} (no HTML)")
    if result.pdf:
        print(f"pdf: {result.pdf}")
    return 0


SUBCOMMANDS = (
    _add_hits_info,
    _add_fetch_hits,
    _add_book,
    _add_simulate,
    _add_train,
    _add_evaluate,
    _add_classify,
    _add_baseline,
)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="rcnnlib", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"show TensorFlow's log lines (silenced by default; or set {VERBOSE_ENV}=1)",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a bad argument (2, one line already printed)
        return int(exc.code or 0)
    # before any handler imports TensorFlow, which reads its log level once
    configure_logging(verbose=args.verbose or None)
    try:
        return int(args.func(args) or 0)
    except InputError as exc:
        print(f"rcnnlib: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rcnnlib: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
