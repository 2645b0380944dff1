"""Training the RCNN on simulated shards, streamed through ``tf.data``, and fine-tuning it on a few real ones.

The training set never has to fit in memory: each epoch visits the shards in
blocks of ``block_size`` sequences (aligned to the HDF5 chunks), mixes
``mix_blocks`` blocks from random shards into one pool (shards hold one class
each), pre-processes the pool with fresh augmentation and yields shuffled
batches. A held-out set of blocks, stratified by class, drives early stopping.

Everything random flows from ``TrainConfig.seed``: the split, the block order
and the augmentation of epoch ``e`` come from ``SeedSequence(seed, spawn_key=(e,))``,
and Keras' own initialisers and dropout from ``keras.utils.set_random_seed``.
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rcnnlib.dataset import SequenceDataset, read_rows
from rcnnlib.errors import InputError
from rcnnlib.outputs import check_output_folder
from rcnnlib.provenance import git_state, python_version
from rcnnlib.rcnn.preprocess import Augmentation, ModelInput, prepare
from rcnnlib.shards import ShardedDataset, open_sequences

if TYPE_CHECKING:  # the model module imports Keras, which train() loads only when it runs
    from rcnnlib.rcnn.model import ModelCard

LEARNING_RATE_DECAYS = ("cosine", "none")
MODEL_FILES = ("model.keras", "card.json")
"""A model folder's files (``rcnnlib.rcnn.model.MODEL_FILE``, ``CARD_FILE``; importing those loads Keras)."""


@dataclass(frozen=True)
class TrainConfig:
    """How to train; saved in the model card."""

    epochs: int = 4
    batch_size: int = 128
    block_size: int = 256  # sequences read at once; a multiple of the shards' HDF5 chunk (256)
    mix_blocks: int = 8  # blocks pooled and shuffled together: 2,048 sequences of ~all classes
    val_fraction: float = 0.05
    max_val_sequences: int = 4000
    patience: int = 2  # epochs without validation-loss improvement before stopping
    # "cosine": to 1 % of the initial rate by the last epoch (the shipped model's 10 epochs);
    # "none" (default): constant. On a 3-epoch run cosine scored lower (real recall 0.72 vs 0.83).
    learning_rate_decay: str = "none"
    seed: int = 0
    augmentation: Augmentation | None = field(default_factory=Augmentation)
    deterministic: bool = True  # TF op determinism: identical weights for identical seeds

    def __post_init__(self) -> None:
        if self.learning_rate_decay not in LEARNING_RATE_DECAYS:
            raise InputError(
                f"learning_rate_decay must be one of {LEARNING_RATE_DECAYS}, got {self.learning_rate_decay!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Block:
    """Rows ``start:stop`` of one stored dataset (a shard file), all of one class."""

    path: Path
    start: int
    stop: int
    label: int

    @property
    def n(self) -> int:
        return self.stop - self.start


def plan_blocks(source: ShardedDataset, block_size: int) -> list[Block]:
    """Cut every shard into blocks of at most ``block_size`` rows."""
    from rcnnlib.classes import label_of

    blocks = []
    for shard in source.shards:
        if len(shard["counts"]) != 1:  # the simulator writes one class per shard
            raise InputError(
                f"shard {shard['file']} holds {len(shard['counts'])} classes; training expects one per shard",
                source.path / "manifest.json",
            )
        (class_name,) = shard["counts"].keys()
        for lo in range(0, shard["n"], block_size):
            blocks.append(
                Block(source.path / shard["file"], lo, min(lo + block_size, shard["n"]), label_of(class_name))
            )
    return blocks


def split_blocks(blocks: list[Block], fraction: float, seed: int) -> tuple[list[Block], list[Block]]:
    """Training and validation blocks; validation takes ``fraction`` of every class (at least one block)."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(2**31,)))
    labels = np.array([b.label for b in blocks])
    val = np.zeros(len(blocks), dtype=bool)
    for label in np.unique(labels):
        idx = np.flatnonzero(labels == label)
        if idx.size < 2:
            raise InputError(
                f"class {label} has a single block: too little data to hold out a validation set"
            )
        n_val = max(1, round(fraction * idx.size))
        val[rng.choice(idx, size=n_val, replace=False)] = True
    return [b for b, v in zip(blocks, val, strict=True) if not v], [
        b for b, v in zip(blocks, val, strict=True) if v
    ]


def read_blocks(blocks: list[Block]) -> SequenceDataset:
    return SequenceDataset.concatenate([read_rows(b.path, b.start, b.stop) for b in blocks])


def targets(inputs: ModelInput) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Keras arrays: inputs, the label at every step, and the step mask as sample weights."""
    y = np.broadcast_to(inputs.labels[:, None], inputs.step_mask.shape).astype(np.int32)
    return (
        {"x": inputs.x, "step_mask": inputs.step_mask},
        np.ascontiguousarray(y),
        inputs.step_mask.astype(np.float32),
    )


def epoch_batches(
    blocks: list[Block], config: TrainConfig, model_config: Any, epoch: int
) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    """One epoch of shuffled, augmented full batches.

    What a pool leaves over (less than a batch) joins the next pool, so the
    number of batches is known in advance whatever the block sizes.
    """
    rng = np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(epoch,)))
    order = rng.permutation(len(blocks))
    carry: tuple[np.ndarray, ...] | None = None
    for lo in range(0, len(order), config.mix_blocks):
        pool = read_blocks([blocks[i] for i in order[lo : lo + config.mix_blocks]])
        x, y, w = targets(prepare(pool, model_config.preprocess, config.augmentation, rng))
        arrays: tuple[np.ndarray, ...] = (x["x"], x["step_mask"], y, w)
        if carry is not None:
            arrays = tuple(np.concatenate([a, b]) for a, b in zip(carry, arrays, strict=True))
        perm = rng.permutation(len(arrays[2]))
        n_full = len(perm) // config.batch_size
        for b in range(n_full):
            sel = perm[b * config.batch_size : (b + 1) * config.batch_size]
            yield {"x": arrays[0][sel], "step_mask": arrays[1][sel]}, arrays[2][sel], arrays[3][sel]
        rest = perm[n_full * config.batch_size :]
        carry = tuple(a[rest] for a in arrays)


def batches_per_epoch(blocks: list[Block], config: TrainConfig) -> int:
    """Batches :func:`epoch_batches` yields: leftovers carry over, so only the last partial batch is lost."""
    return sum(b.n for b in blocks) // config.batch_size


def training_dataset(blocks: list[Block], config: TrainConfig, model_config: Any):
    import tensorflow as tf

    steps = model_config.preprocess.n_steps
    k = model_config.preprocess.channels
    counter = {"epoch": 0}

    def generator():
        epoch = counter["epoch"]
        counter["epoch"] += 1
        yield from epoch_batches(blocks, config, model_config, epoch)

    signature = (
        {
            "x": tf.TensorSpec((None, steps, 21, 21, k), tf.float32),
            "step_mask": tf.TensorSpec((None, steps), tf.bool),
        },
        tf.TensorSpec((None, steps), tf.int32),
        tf.TensorSpec((None, steps), tf.float32),
    )
    data = tf.data.Dataset.from_generator(generator, output_signature=signature)
    n = batches_per_epoch(blocks, config)
    # A pool's worth of batches in the buffer: the generator's thread reads and prepares the
    # next pool while the model trains on this one (two batches only let them take turns).
    # The same batches in the same order: overlap changes the speed, never the result.
    ahead = -(-config.mix_blocks * config.block_size // config.batch_size) + 1
    return data.apply(tf.data.experimental.assert_cardinality(n)).prefetch(ahead), n


def distribution_strategy():
    """All local GPUs when there are several, else the default (one device, CPU or GPU)."""
    import tensorflow as tf

    if len(tf.config.list_physical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def train(
    simulations: str | Path,
    out_dir: str | Path,
    config: TrainConfig | None = None,
    model_config: Any = None,
    verbose: int | str = "auto",
    command: str | None = None,
) -> ModelCard:
    """Train a new RCNN on a simulated shard folder and save it with its model card; returns the card.

    The card records the code that trained it (the git commit of this checkout, if any, and
    whether it had uncommitted changes) and ``command``, the command line that ran it.
    """
    source = _checked_source(simulations, out_dir)
    import keras
    import tensorflow as tf

    from rcnnlib.rcnn.model import ModelCard, ModelConfig, save_model

    config = config or TrainConfig()
    model_config = model_config or ModelConfig()
    code_state = git_state()  # at the start: the code may be edited during a long training
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()

    train_blocks, val_blocks = split_blocks(
        plan_blocks(source, config.block_size), config.val_fraction, config.seed
    )
    val = _validation_set(val_blocks, config)
    validation = targets(prepare(val, model_config.preprocess))
    data, n_batches = training_dataset(train_blocks, config, model_config)
    if n_batches == 0:
        raise InputError(f"fewer training sequences than one batch ({config.batch_size})", simulations)
    model = _new_model(model_config, config, n_batches)
    timer = _epoch_timer()
    start = time.perf_counter()
    history = model.fit(
        data,
        epochs=config.epochs,
        validation_data=validation,
        shuffle=False,  # the tf.data pipeline shuffles; Keras would warn that it ignores shuffle=True
        callbacks=[_early_stopping(config, verbose), timer],
        verbose=verbose if verbose != "auto" else (1 if sys.stderr.isatty() else 2),
    ).history
    elapsed = time.perf_counter() - start
    card = ModelCard(
        config=model_config,
        model="RCNN trained on simulations only",
        training_data=_training_data_card(simulations, source, train_blocks, len(val)),
        train_config=config.to_dict(),
        seed=config.seed,
        training_time_s=round(elapsed, 1),
        **_fit_card(model, history, sum(b.n for b in train_blocks), elapsed),
        epoch_seconds=timer.seconds,
        environment=_environment(),
        code={"command": command, **code_state},
    )
    save_model(model, out_dir, card)
    return card


def _checked_source(simulations: str | Path, out_dir: str | Path) -> ShardedDataset:
    """The shard folder, checked with the output folder before TensorFlow loads and hours of training.

    Every shard is read once: a flipped byte fails now, naming the shard.
    """
    check_output_folder(out_dir)
    source = open_sequences(simulations)
    if not isinstance(source, ShardedDataset):
        raise InputError("training streams from a shard folder written by `rcnnlib simulate`", simulations)
    source.check_shards()
    return source


def _validation_set(blocks: list[Block], config: TrainConfig) -> SequenceDataset:
    """The held-out blocks, at most ``max_val_sequences`` of them drawn with the training seed."""
    val = read_blocks(blocks)
    if len(val) > config.max_val_sequences:
        keep = np.random.default_rng(config.seed).choice(len(val), config.max_val_sequences, replace=False)
        val = val.subset(np.sort(keep))
    return val


def _new_model(model_config: Any, config: TrainConfig, n_batches: int) -> Any:
    """A fresh RCNN on every local GPU (or the CPU), with the configured learning-rate schedule."""
    import keras

    from rcnnlib.rcnn.model import build_model, compile_model

    with distribution_strategy().scope():
        model = build_model(model_config)
        if config.learning_rate_decay == "cosine":
            # a constant rate left the previous shipped model still improving after 8 epochs;
            # annealing over the planned epochs takes the end-of-training gain within the budget
            schedule = keras.optimizers.schedules.CosineDecay(
                model_config.learning_rate, decay_steps=config.epochs * n_batches, alpha=0.01
            )
            compile_model(model, schedule)
    return model


def _early_stopping(config: TrainConfig, verbose: int | str) -> Any:
    import keras

    return keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=config.patience, restore_best_weights=True, verbose=int(verbose != 0)
    )


def _training_data_card(
    simulations: str | Path, source: ShardedDataset, train_blocks: list[Block], n_val: int
) -> dict[str, Any]:
    return {
        "path": str(Path(simulations).resolve()),
        "fingerprint": source.fingerprint,
        "metadata": source.metadata,
        "class_counts": source.class_counts(),
        "n_train_sequences": sum(b.n for b in train_blocks),
        "n_val_sequences": n_val,
    }


def _fit_card(model: Any, history: dict[str, list[float]], n_train: int, elapsed: float) -> dict[str, Any]:
    """What ``fit`` did: epochs, the best one (restored), speed, final learning rate, the history."""
    import keras

    best = int(np.argmin(history["val_loss"]))
    return {
        "epochs_run": len(history["loss"]),
        "best_epoch": best + 1,
        "sequences_per_second": round(n_train * len(history["loss"]) / elapsed, 1),
        "final_learning_rate": float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)),
        "validation": {
            "loss": float(history["val_loss"][best]),
            "step_accuracy": float(history["val_accuracy"][best]),
        },
        "history": {k: [float(v) for v in vals] for k, vals in history.items()},
    }


def _epoch_timer():
    """A Keras callback recording every epoch's wall time (``.seconds``), for the model card."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.seconds.append(round(time.perf_counter() - self._t0, 1))

    return EpochTimer()


def _environment() -> dict[str, str]:
    """The versions that decide a training's numbers (as imported), and the machine with its GPU count."""
    import keras
    import tensorflow as tf

    from rcnnlib import __version__

    return {
        "rcnnlib": __version__,
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": python_version(),
        "machine": f"{platform.machine()}, {len(tf.config.list_physical_devices('GPU'))} GPU(s)",
    }


# --------------------------------------------------------------------------- fine-tuning
@dataclass(frozen=True)
class FineTuneConfig:
    """Fine-tuning on a handful of real sequences: few epochs, a small learning rate, augmentation.

    ``base_weight`` is how much the simulation-only model keeps in the fine-tuned
    prediction (:func:`rcnnlib.rcnn.model.blend_proba`); 0.5 was chosen on draws of
    seed 1 (0.4-0.7 scored alike there), the reported figures use seed 0.
    """

    epochs: int = 60
    learning_rate: float = 1e-3
    batch_size: int = 16
    augmentation: Augmentation | None = field(default_factory=Augmentation)
    base_weight: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.base_weight <= 1.0:
            raise InputError(f"the fine-tuning base weight must lie in [0, 1], got {self.base_weight}")


def fine_tune(
    model: Any,
    model_config: Any,
    real: SequenceDataset,
    config: FineTuneConfig,
    seed: int,
    into: Any = None,
) -> Any:
    """A copy of ``model`` trained further on ``real``; each pass sees freshly augmented copies.

    The augmented copies of several passes are fitted in one Keras call (up to
    ~2,000 sequences at a time): a call per pass costs more than the pass itself
    for ten sequences per class. ``into``, a model returned by an earlier call on
    the same ``model``, is reset to ``model``'s weights and trained again instead
    of a new clone: repeated draws then reuse one traced inference graph rather
    than tracing one per draw (what TensorFlow's retracing warning reported).
    """
    import keras

    from rcnnlib.rcnn.model import compile_model

    keras.utils.set_random_seed(seed)
    tuned = keras.models.clone_model(model) if into is None else into
    tuned.set_weights(model.get_weights())
    compile_model(tuned, config.learning_rate)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(7,)))
    per_call = max(1, 2000 // max(len(real), 1))
    done = 0
    while done < config.epochs:
        passes = min(per_call, config.epochs - done)
        parts = [
            targets(prepare(real, model_config.preprocess, config.augmentation, rng)) for _ in range(passes)
        ]
        x = {key: np.concatenate([p[0][key] for p in parts]) for key in ("x", "step_mask")}
        y = np.concatenate([p[1] for p in parts])
        w = np.concatenate([p[2] for p in parts])
        tuned.fit(x, y, sample_weight=w, batch_size=config.batch_size, epochs=1, shuffle=True, verbose=0)
        done += passes
    return tuned


# --------------------------------------------------------------------------- CLI


def check_model_folder(out: Path) -> None:
    """``--out`` is a new folder, an empty one or a model folder (whose model is replaced), nothing else."""
    check_output_folder(out)
    if out.is_dir() and any(out.iterdir()) and not any((out / name).is_file() for name in MODEL_FILES):
        raise InputError(
            f"already exists and is not a model folder (no {' or '.join(MODEL_FILES)}): "
            "choose a new or empty folder",
            out,
        )
