"""Classifying an alert stream: one new stamp in, current class probabilities out, at constant cost.

The batch network re-reads a whole sequence; a broker cannot afford that for
every alert. :class:`StreamingClassifier` keeps the LSTM's state and the last
``epochs_per_step - 1`` calibrated stamps, so each update runs the encoder
once and the LSTM cell once. It reuses the trained layers (no weight copies)
and the per-epoch calibration of :mod:`rcnnlib.rcnn.preprocess`, so after the same
epochs it returns what the batch model returns for that sequence prepared
without detection alignment (``align_on_detection=False``): a stream starts
where the alerts start.
"""

from __future__ import annotations

import functools
import math
import weakref
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from rcnnlib.calibration import apply_temperature
from rcnnlib.dataset import COLUMN, CONDITION_NAMES, STAMP_SIZE
from rcnnlib.errors import InputError
from rcnnlib.observations import CONDITION_RANGES, condition_problem
from rcnnlib.rcnn.model import ModelConfig, load_model
from rcnnlib.rcnn.preprocess import (
    PreprocessConfig,
    calibrate,
    filter_matrices,
    flux_scale,
    matching_sigma,
    normalise,
    reference_level,
    relative_change,
)

_STEPS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def step_function(model: Any, config: ModelConfig):
    """A compiled ``(x_step, h, c) -> (probabilities, h, c)`` built from the trained model's layers.

    Built and traced once per model and shared by all its classifiers (a broker
    runs one per object): tracing and XLA compilation take about a second.
    """
    step = _STEPS.get(model)
    if step is None:
        step = _STEPS[model] = _build_step(model, config)
    return step


def _build_step(model: Any, config: ModelConfig):
    import tensorflow as tf

    encoder = []
    for layer in model.layers:
        if layer.name.startswith(("conv", "pool")) or layer.name in ("flatten", "dropout", "dense"):
            encoder.append(layer)
    cell = model.get_layer("lstm").cell
    head = model.get_layer("probabilities")
    channels = config.preprocess.channels
    units = config.lstm_units

    @tf.function(
        input_signature=[
            tf.TensorSpec((None, STAMP_SIZE, STAMP_SIZE, channels), tf.float32),
            tf.TensorSpec((None, units), tf.float32),
            tf.TensorSpec((None, units), tf.float32),
        ],
        jit_compile=True,  # XLA fuses the tiny per-epoch ops: 1.8 -> 1.0 ms per step, measured in one run
    )
    def step(x, h, c):
        z = x
        for layer in encoder:
            z = layer(z, training=False)
        out, (h_new, c_new) = cell(z, [h, c], training=False)
        return head(out), h_new, c_new

    # the concrete graph skips tf.function's per-call signature matching: half of a ~1 ms update
    concrete = step.get_concrete_function()
    flat_call = getattr(concrete, "_call_flat", None)
    if flat_call is None:  # a TensorFlow without the flat call: the public one (same result, slower)
        return concrete
    captured = concrete.captured_inputs

    def call(x, h, c):
        # ConcreteFunction.__call__ re-binds the three tensors to its signature in Python (~30 % of an
        # update, profiled); the input_signature above already fixes their shapes and dtypes
        return flat_call([tf.constant(x), tf.convert_to_tensor(h), tf.convert_to_tensor(c)], captured)

    return call


class StreamingClassifier:
    """Stateful RCNN for one object's alert stream.

    ``update(stamp, mjd, conditions)`` takes one 21x21 stamp (ADU, sky not
    subtracted), its MJD and its conditions (the six :data:`CONDITION_NAMES`,
    in order, or a mapping by name) and returns the class probabilities after
    that epoch. Epochs worse than the seeing cut, or with a condition not
    measured (non-finite), are recorded but change nothing, as in the batch
    path; implausible values (see :mod:`rcnnlib.observations`) are refused.
    Until ``epochs_per_step`` good epochs have arrived the probabilities are ``None``.
    ``temperature`` scales them (:func:`rcnnlib.calibration.apply_temperature`; 1: as
    trained), e.g. with one fitted on a few labelled real sequences (chapter 4).
    """

    def __init__(
        self,
        model_dir: str | Path | None = None,
        model: Any = None,
        config: ModelConfig | None = None,
        temperature: float = 1.0,
    ):
        if not (np.isfinite(temperature) and temperature > 0):
            raise InputError(f"the temperature must be a positive number, got {temperature}")
        self.temperature = float(temperature)
        if model is None:
            model, config, _ = load_model(model_dir)
        if config is None:
            raise ValueError("pass the model's ModelConfig together with the model")
        self.model, self.config = model, config
        self.class_names = config.class_names
        self._step = step_function(model, config)
        self.reset()

    def reset(self) -> None:
        """Forget the current object: a new stream starts."""
        k = self.config.preprocess.epochs_per_step
        self._buffer: deque[np.ndarray] = deque(maxlen=k)
        self._changes: deque[np.ndarray] = deque(maxlen=k)
        self._reference: tuple[np.ndarray, np.ndarray] | None = None  # first good epoch, its level
        self._h = self._c = np.zeros((1, self.config.lstm_units), np.float32)
        self._last_mjd = -np.inf
        self.probabilities: np.ndarray | None = None
        self.n_epochs = 0
        self.n_steps = 0

    def update(self, stamp: np.ndarray, mjd: float, conditions: Any) -> np.ndarray | None:
        """Add one epoch; the class probabilities after it (None until the first full step).

        Checked as ``rcnnlib classify`` checks a file (:mod:`rcnnlib.observations`),
        before anything changes: a refused epoch leaves the stream as it was. An
        epoch with a non-finite condition (not measured) or seeing beyond the cut
        is recorded (its MJD orders later epochs) but not used, as in the batch path.
        """
        stamp = np.asarray(stamp)
        if stamp.dtype.kind not in "fiu":
            raise InputError(f"a stamp must hold real numbers, got dtype {stamp.dtype}")
        if stamp.shape != (STAMP_SIZE, STAMP_SIZE):
            raise InputError(f"a stamp must be {STAMP_SIZE}x{STAMP_SIZE} pixels, got shape {stamp.shape}")
        stamp = stamp.astype(np.float32)
        try:
            mjd = float(mjd)
        except (TypeError, ValueError):
            raise InputError(f"mjd must be a number, got {mjd!r}") from None
        if not np.isfinite(mjd):
            raise InputError(f"mjd must be a finite number, got {mjd}")
        if not np.isfinite(stamp.sum()) and not np.isfinite(stamp).all():  # a finite sum: finite pixels
            raise InputError(f"stamp at MJD {mjd} has non-finite pixels")
        if mjd <= self._last_mjd:
            raise InputError(f"epochs must arrive in time order: MJD {mjd} after {self._last_mjd}")
        cond = _conditions_vector(conditions)
        if not _plausible(cond):
            problem = condition_problem(cond)
            raise InputError(f"epoch at MJD {mjd}: {problem[1] if problem else 'implausible conditions'}")
        self._last_mjd = mjd
        self.n_epochs += 1
        x = self.step_input(stamp, cond)
        if x is None:
            return self.probabilities
        proba, self._h, self._c = self._step(x, self._h, self._c)
        self.probabilities = apply_temperature(np.asarray(proba)[0], self.temperature)
        self.n_steps += 1
        return self.probabilities

    def step_input(self, stamp: np.ndarray, cond: np.ndarray) -> np.ndarray | None:
        """The pre-processing (numpy) part of :meth:`update` for a checked float32 epoch: the network's
        next (1, S, S, channels) input, or None (epoch not used, or no full step yet)."""
        pre = self.config.preprocess
        if not (np.isfinite(cond).all() and cond[COLUMN["seeing"]] < pre.max_seeing):
            return None  # what preprocess.quality_mask drops
        scale, blur = _exposure_constants(tuple(cond.tolist()), pre)
        flux, _ = calibrate(stamp[None], cond[None], pre, scale=scale)
        if blur is not None:  # match_psf with the exposure's matrix
            flux = np.matmul(np.matmul(blur, flux), blur)
        self._buffer.append(normalise(flux, pre)[0])
        if pre.difference_channels:
            if self._reference is None:  # changes are measured against the stream's first good epoch
                self._reference = (flux, reference_level(flux, pre))
            self._changes.append(relative_change(flux, *self._reference, pre)[0])
        if len(self._buffer) < pre.epochs_per_step:
            return None
        return np.array([*self._buffer, *self._changes]).transpose(1, 2, 0)[None]  # np.stack, 3x cheaper


@functools.lru_cache(maxsize=4096)
def _exposure_constants(conditions: tuple[float, ...], config: PreprocessConfig) -> tuple[np.ndarray, Any]:
    """The flux scale (1,) and PSF-matching matrix (1, S, S) (None: no matching) of one epoch's conditions.

    Every alert of an exposure (and CCD) shares its conditions, so a broker computes
    these once per exposure instead of once per alert: a third of the numpy time.
    """
    cond = np.array(conditions, np.float32)[None]
    sigma = matching_sigma(cond[:, COLUMN["seeing"]], config)
    blur = None if sigma is None else filter_matrices(STAMP_SIZE, blur_sigma=sigma)[0]  # (1, S, S)
    return flux_scale(cond, config), blur


def _plausible(cond: np.ndarray) -> bool:
    """``condition_problem(cond) is None`` for one epoch, on Python floats: 50x fewer numpy calls."""
    return all(
        not math.isfinite(value) or CONDITION_RANGES[name].contains(value)
        for name, value in zip(CONDITION_NAMES, cond.tolist(), strict=True)
    )


def _conditions_vector(conditions: Any) -> np.ndarray:
    """The six condition values as float32 (the batch path's dtype, so both check the same numbers)."""
    names = ", ".join(CONDITION_NAMES)
    if isinstance(conditions, dict):
        missing = [name for name in CONDITION_NAMES if name not in conditions]
        if missing:
            raise InputError(f"conditions lack {', '.join(missing)}")
        conditions = [conditions[name] for name in CONDITION_NAMES]
    try:
        cond = np.asarray(conditions, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"conditions must be the {len(CONDITION_NAMES)} numbers {names}") from None
    if cond.shape != (len(CONDITION_NAMES),):
        raise InputError(
            f"conditions must be the {len(CONDITION_NAMES)} values {names}, got shape {cond.shape}"
        )
    return cond.astype(np.float32)
