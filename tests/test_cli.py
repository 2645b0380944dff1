"""The command line in one place: light to start, defaults that agree with the library."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rcnnlib import cli


def modules_loaded_by(code: str) -> set[str]:
    proc = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return set(json.loads(proc.stdout.splitlines()[-1]))


HEAVY = ("tensorflow", "keras", "sklearn", "dask", "distributed", "papermill", "jupyter_book", "matplotlib")


def test_help_and_parsing_load_no_heavy_library():
    """``rcnnlib --help`` and argument errors answer without importing TensorFlow & co."""
    loaded = modules_loaded_by(
        "from rcnnlib.cli import build_parser\n"
        "parser = build_parser()\n"
        "parser.parse_args(['simulate', '--n-per-class', '1', '--out', 'x'])\n"
        "parser.format_help()"
    )
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY), sorted(
        m for m in loaded if m.split(".")[0] in HEAVY
    )[:5]


def test_the_check_above_can_fail():
    assert "sklearn" in {m.split(".")[0] for m in modules_loaded_by("import rcnnlib.forest.baseline")}


def test_help_defaults_agree_with_the_library():
    from rcnnlib.classes import CLASS_NAMES
    from rcnnlib.forest.baseline import N_ESTIMATORS
    from rcnnlib.hits.fetch import DEFAULT_DEST, DEFAULT_WORKERS, URL_ENV
    from rcnnlib.hits.loader import SN_SUBSETS
    from rcnnlib.rcnn.train import LEARNING_RATE_DECAYS, TrainConfig
    from rcnnlib.sim.lightcurves import ALPHA
    from rcnnlib.sim.survey import PRESETS

    assert cli.CLASS_NAMES == tuple(CLASS_NAMES)
    assert cli.MAG_SLOPE == ALPHA and cli.N_ESTIMATORS == N_ESTIMATORS
    assert cli.SN_SUBSETS == tuple(SN_SUBSETS) and tuple(cli.SURVEY_PRESETS) == tuple(PRESETS)
    assert cli.LEARNING_RATE_DECAYS == tuple(LEARNING_RATE_DECAYS)
    assert cli.TRAIN_DEFAULTS == {k: getattr(TrainConfig, k) for k in cli.TRAIN_DEFAULTS}
    assert (cli.FETCH_WORKERS, cli.HITS_URL_ENV) == (DEFAULT_WORKERS, URL_ENV)
    assert cli.build_parser().parse_args(["fetch-hits"]).dest == DEFAULT_DEST


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "--n-per-class", "1", "--out", "x", "--seed", "-1"],
        ["train", "sims", "--out", "m", "--epochs", "0"],
        ["evaluate", "--repeats", "0"],
        ["baseline", "--seed", "x"],
    ],
)
def test_bad_numbers_are_refused_while_parsing(argv, capsys):
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("rcnnlib: error: ") and "--help" in err[0]


def test_every_json_option_takes_a_file():
    """``--json`` means the same everywhere: a FILE to write (it was a flag in hits-info)."""
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        for action in sub._actions:
            if "--json" in action.option_strings:
                assert action.nargs is None and action.metavar == "FILE", name


def test_a_missing_extra_is_one_line(monkeypatch, capsys):
    """``pip install rcnnlib`` without [book]: `rcnnlib book` says which extra to install."""
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda m, *a: None if m == "papermill" else real(m, *a))
    assert cli.main(["book", "--profile", "ci", "--dry-run"]) == 2
    assert capsys.readouterr().err.strip() == "rcnnlib: error: needs papermill: pip install 'rcnnlib[book]'"
