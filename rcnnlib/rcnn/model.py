"""The recurrent convolutional network (RCNN), built from a config with the Keras functional API.

Per time step (3 epochs stacked as channels) a small convolutional encoder
turns the stamps into a feature vector; an LSTM carries evidence along the
sequence and a softmax gives class probabilities at every step, so the same
network classifies early (after a few epochs) and late. Masked steps (after the
end of a sequence) are skipped by the LSTM and carry no loss.

The layers are named, so :func:`rcnnlib.rcnn.stream.step_function` can rebuild the same network
one step at a time for the streaming classifier without copying weights.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers

from rcnnlib.classes import CLASS_NAMES
from rcnnlib.dataset import STAMP_SIZE
from rcnnlib.errors import InputError
from rcnnlib.logs import quiet_tensorflow_logger
from rcnnlib.outputs import atomic_path, write_atomic
from rcnnlib.rcnn.preprocess import PreprocessConfig

quiet_tensorflow_logger()  # Keras has loaded TensorFlow: no warnings on a chapter's page

MODEL_FILE = "model.keras"
CARD_FILE = "card.json"


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and optimiser. Defaults were chosen by measurement (see the training chapter)."""

    # Encoder: a 3x3 convolution per entry, with its stride and whether a 2x2 max-pool follows.
    # (16, s2) -> (16, s1) -> pool runs ~3x faster on 2 CPU cores than the textbook
    # (16, s1, pool) -> (32, s1, pool) at similar accuracy; the training chapter has the measurement.
    conv_filters: tuple[int, ...] = (16, 16)
    conv_strides: tuple[int, ...] = (2, 1)
    pool_after: tuple[bool, ...] = (False, True)
    kernel_size: int = 3
    dense_units: int = 64
    lstm_units: int = 64
    dropout: float = 0.2
    learning_rate: float = 1e-3
    class_names: tuple[str, ...] = CLASS_NAMES
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["preprocess"] = self.preprocess.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        data = dict(data)
        pre = dict(data.get("preprocess", {}))
        # cards written before PSF matching and relative-change channels describe models without them
        pre.setdefault("psf_match_seeing", None)
        pre.setdefault("difference_channels", False)
        data["preprocess"] = PreprocessConfig(**pre)
        for key in ("conv_filters", "conv_strides", "pool_after", "class_names"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(**data)


@keras.saving.register_keras_serializable(package="rcnnlib")
class FoldTime(layers.Layer):
    """(N, steps, ...) -> (N * steps, ...): the encoder sees every step as one big batch.

    Keras 3's ``TimeDistributed`` loops over steps in Python (20 small
    convolutions); one convolution over the folded batch is several times faster.
    """

    def call(self, inputs):
        return keras.ops.reshape(inputs, (-1, *inputs.shape[2:]))


@keras.saving.register_keras_serializable(package="rcnnlib")
class UnfoldTime(layers.Layer):
    """(N * steps, features) -> (N, steps, features), the inverse of :class:`FoldTime`."""

    def __init__(self, steps: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.steps = steps

    def call(self, inputs):
        return keras.ops.reshape(inputs, (-1, self.steps, *inputs.shape[1:]))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "steps": self.steps}


def encoder_layers(config: ModelConfig) -> list[layers.Layer]:
    """The per-step encoder, in order: conv (+ pool) blocks, flatten, dropout, dense."""
    if not len(config.conv_filters) == len(config.conv_strides) == len(config.pool_after):
        raise InputError("conv_filters, conv_strides and pool_after must have the same length")
    out: list[layers.Layer] = []
    blocks = zip(config.conv_filters, config.conv_strides, config.pool_after, strict=True)
    for i, (filters, stride, pool) in enumerate(blocks):
        out.append(
            layers.Conv2D(
                filters,
                config.kernel_size,
                strides=stride,
                padding="same",
                activation="relu",
                name=f"conv{i}",
            )
        )
        if pool:
            out.append(layers.MaxPooling2D(2, name=f"pool{i}"))
    out.append(layers.Flatten(name="flatten"))
    out.append(layers.Dropout(config.dropout, name="dropout"))
    out.append(layers.Dense(config.dense_units, activation="relu", name="dense"))
    return out


def build_model(config: ModelConfig) -> keras.Model:
    """The RCNN: inputs ``x`` (N, steps, 21, 21, k) and ``step_mask`` (N, steps) -> (N, steps, classes)."""
    pre = config.preprocess
    x_in = keras.Input((pre.n_steps, STAMP_SIZE, STAMP_SIZE, pre.channels), name="x")
    mask_in = keras.Input((pre.n_steps,), dtype="bool", name="step_mask")
    h = FoldTime(name="fold_time")(x_in)
    for layer in encoder_layers(config):
        h = layer(h)
    h = UnfoldTime(pre.n_steps, name="unfold_time")(h)
    h = layers.LSTM(config.lstm_units, return_sequences=True, name="lstm")(h, mask=mask_in)
    out = layers.Dense(len(config.class_names), activation="softmax", name="probabilities")(h)
    model = keras.Model({"x": x_in, "step_mask": mask_in}, out, name="rcnn")
    compile_model(model, config.learning_rate)
    return model


def compile_model(
    model: keras.Model, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> None:
    """AMSGrad and per-step cross-entropy; the step mask arrives as sample weights."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate, amsgrad=True),
        loss=keras.losses.SparseCategoricalCrossentropy(),
        weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
    )


@dataclass
class ModelCard:
    """What a saved model is: the network's config, what it was trained on and how, how well it did.

    Written as ``card.json`` beside ``model.keras``. Only ``config`` and ``model`` are
    required (a card written by hand, or by an older version, may hold less); keys
    this version does not know are kept in ``extra`` and written back unchanged.
    """

    config: ModelConfig
    model: str
    training_data: dict[str, Any] = field(default_factory=dict)
    train_config: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    training_time_s: float | None = None
    epochs_run: int | None = None
    best_epoch: int | None = None
    sequences_per_second: float | None = None
    final_learning_rate: float | None = None
    validation: dict[str, float] = field(default_factory=dict)
    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)
    environment: dict[str, str] = field(default_factory=dict)
    code: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The ``card.json`` object: ``config`` first, fields that are unset left out."""
        out: dict[str, Any] = {"config": self.config.to_dict()}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name not in ("config", "extra") and value not in (None, {}, []):
                out[name] = value
        return {**out, **self.extra}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        """Parse a card; KeyError/TypeError/ValueError for one that is not (the loader names the file)."""
        if not isinstance(data, dict):
            raise TypeError("a model card is a JSON object")
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data and name != "extra"}
        known["config"] = ModelConfig.from_dict(data["config"])
        known.setdefault("model", "")
        extra = {k: v for k, v in data.items() if k not in cls.__dataclass_fields__}
        return cls(**known, extra=extra)


def save_model(model: keras.Model, folder: str | Path, card: ModelCard) -> Path:
    """Write ``model.keras`` and ``card.json`` (config, data, seed, figures) into ``folder``, atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_path(folder / MODEL_FILE) as tmp:
        model.save(tmp.with_suffix(".keras"))
        tmp.with_suffix(".keras").replace(tmp)
    write_atomic(folder / CARD_FILE, json.dumps(card.to_json(), indent=2, default=_jsonable) + "\n")
    return folder


def _jsonable(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def pretrained_dir() -> Path:
    """The model shipped with the package: trained on simulations only by ``rcnnlib train``."""
    return Path(__file__).parent / "pretrained"


def load_model(folder: str | Path | None = None) -> tuple[keras.Model, ModelConfig, ModelCard]:
    """A saved model, its config and its card; the shipped pretrained model by default."""
    folder = pretrained_dir() if folder is None else Path(folder)
    model_file, card_file = folder / MODEL_FILE, folder / CARD_FILE
    for path in (model_file, card_file):
        if not path.is_file():
            raise InputError(f"not a saved rcnnlib model: {path.name} is missing", folder)
    try:
        card = ModelCard.from_json(json.loads(card_file.read_text()))
        config = card.config
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"unreadable model card ({exc})", card_file) from None
    try:
        model = keras.models.load_model(model_file, compile=False)
    except Exception as exc:  # keras raises many types for a corrupt archive
        raise InputError(f"unreadable Keras model ({_first_line(exc)})", model_file) from None
    check_card_matches(model, config, folder)
    compile_model(model, config.learning_rate)
    return model, config, card


def _first_line(exc: BaseException) -> str:
    """An exception as one line: errors are printed as one line, Keras messages span many."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"


def check_card_matches(model: keras.Model, config: ModelConfig, folder: str | Path) -> None:
    """Refuse a card whose config does not describe the saved network.

    Why: the card's preprocessing shapes the input and its sizes drive the
    streaming classifier, so a card edited by hand or copied beside other
    weights would otherwise end in hundreds of lines of TensorFlow trace (or in
    wrong numbers). The card's config is built and compared layer by layer.
    """
    card_file = Path(folder) / CARD_FILE
    try:
        expected = build_model(config)
    except Exception as exc:  # Keras raises many types for impossible sizes
        raise InputError(
            f"the card's config does not describe a network ({_first_line(exc)})", card_file
        ) from None

    def shapes(m: keras.Model) -> dict[str, list[tuple[int, ...]]]:
        return {layer.name: [tuple(w.shape) for w in layer.weights] for layer in m.layers}

    def inputs(m: keras.Model) -> dict[str, tuple]:
        names = m.input if isinstance(m.input, dict) else {}
        return {k: tuple(v.shape) for k, v in names.items()}

    want, got = shapes(expected), shapes(model)
    if inputs(expected) != inputs(model):
        raise InputError(
            f"the card's preprocessing gives inputs {inputs(expected)}, "
            f"the saved network takes {inputs(model)}",
            card_file,
        )
    for name, weights in want.items():
        if name not in got:
            raise InputError(f"the card's config has a layer {name!r} the saved network lacks", card_file)
        if got[name] != weights:
            raise InputError(
                f"the card's config gives layer {name!r} weights {weights}, the saved network {got[name]}",
                card_file,
            )


_COMPILED: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_call(model: keras.Model):
    """The model's forward pass as one traced graph: about twice the throughput of eager calls on CPU."""
    fn = _COMPILED.get(model)
    if fn is None:
        import tensorflow as tf

        x_spec, mask_spec = (
            tf.TensorSpec((None, *model.input[name].shape[1:]), model.input[name].dtype)
            for name in ("x", "step_mask")
        )
        fn = tf.function(
            lambda x, m: model({"x": x, "step_mask": m}, training=False), input_signature=[x_spec, mask_spec]
        )
        _COMPILED[model] = fn
    return fn


def predict_proba(
    model: keras.Model, x: np.ndarray, step_mask: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Class probabilities at every step, (N, steps, classes), in batches through a compiled graph."""
    call = _compiled_call(model)
    out = [
        np.asarray(call(x[lo : lo + batch_size], step_mask[lo : lo + batch_size]))
        for lo in range(0, x.shape[0], batch_size)
    ]
    return np.concatenate(out, axis=0) if out else np.zeros((0, x.shape[1], model.output_shape[-1]))


def last_step_proba(proba: np.ndarray, step_mask: np.ndarray) -> np.ndarray:
    """Probabilities at each sequence's last valid step, (N, classes): the whole-sequence prediction."""
    last = np.maximum(step_mask.sum(1) - 1, 0)
    return proba[np.arange(proba.shape[0]), last]


def blend_proba(tuned: np.ndarray, base: np.ndarray, base_weight: float) -> np.ndarray:
    """Normalised weighted geometric mean of a fine-tuned and a simulation-only model's probabilities.

    Why: ten real sequences per class teach the fine-tuned network the real
    supernovae it never quite saw in simulation, but its RR Lyrae / binary
    boundary drifts toward those few examples. The simulation-only network still
    holds the boundary it learnt from ~170k sequences; a product of the two keeps
    what each is sure of. ``base_weight`` 0 is the fine-tuned model alone.
    """
    if not 0.0 <= base_weight <= 1.0:
        raise ValueError(f"base_weight must lie in [0, 1], got {base_weight}")
    tiny = np.finfo(np.float32).tiny
    log = (1.0 - base_weight) * np.log(np.maximum(tuned, tiny)) + base_weight * np.log(np.maximum(base, tiny))
    log -= log.max(axis=-1, keepdims=True)
    out = np.exp(log)
    return out / out.sum(axis=-1, keepdims=True)
