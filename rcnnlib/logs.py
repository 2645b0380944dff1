"""Quiet by default: TensorFlow's log lines are noise to the people who run this package.

TensorFlow prints C++ (absl) lines such as ``I0000 ... cpu_feature_guard.cc`` and
``E0000 ... oneDNN supports DT_BOOL only`` when it loads, and Python warnings on its
``tensorflow`` logger; none of them is actionable for a user of ``rcnnlib``, and
they bury the one line an error is. Importing :mod:`rcnnlib` silences both before
TensorFlow loads (the C++ level is read once, at TensorFlow's import), unless
``RCNNLIB_VERBOSE=1`` is set or the command line gets ``--verbose``. A
``TF_CPP_MIN_LOG_LEVEL`` that the user set is always respected. Notebook kernels
started by ``rcnnlib book`` inherit the setting through the environment.
"""

from __future__ import annotations

import logging
import os

VERBOSE_ENV = "RCNNLIB_VERBOSE"
TF_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
QUIET_LEVEL = "3"  # fatal only: TensorFlow's start-up "errors" (oneDNN, port.cc) are harmless
_OURS = "RCNNLIB_SET_TF_LOG_LEVEL"  # marks a TF_CPP_MIN_LOG_LEVEL that we set, so --verbose can undo it


def verbose_requested() -> bool:
    """Whether ``RCNNLIB_VERBOSE`` asks for TensorFlow's log lines."""
    return os.environ.get(VERBOSE_ENV, "").strip().lower() not in ("", "0", "false", "no")


def configure_logging(verbose: bool | None = None) -> None:
    """Silence (or, when ``verbose``, restore) TensorFlow's C++ and Python logs.

    ``verbose=None`` follows ``RCNNLIB_VERBOSE``. Only effective for the C++ lines
    when called before TensorFlow is imported.
    """
    verbose = verbose_requested() if verbose is None else verbose
    if verbose:
        os.environ[VERBOSE_ENV] = "1"
        if os.environ.pop(_OURS, None) is not None:
            os.environ.pop(TF_LEVEL_ENV, None)
        logging.getLogger("tensorflow").setLevel(logging.NOTSET)
        return
    if TF_LEVEL_ENV not in os.environ:
        os.environ[TF_LEVEL_ENV] = QUIET_LEVEL
        os.environ[_OURS] = "1"
    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def quiet_tensorflow_logger() -> None:
    """Hold TensorFlow's Python logger at ERROR once TensorFlow is loaded (unless verbose).

    Why again after :func:`configure_logging`: in an interactive session (a notebook
    kernel) TensorFlow sets its logger to INFO the first time it asks for it, which
    would let warnings such as the tf.function retracing one onto a chapter's page.
    Asking for it here first, then setting the level, makes the level stick.
    """
    if verbose_requested():
        return
    import tensorflow as tf

    tf.get_logger().setLevel(logging.ERROR)
