"""The RCNN: built from a config, masked, saved and loaded, streamed, trained repeatably, evaluated."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import first_per_class, stream_and_batch

from rcnnlib.classes import CLASS_NAMES
from rcnnlib.dataset import SequenceDataset
from rcnnlib.errors import InputError
from rcnnlib.protocol import Recall, few_shot_draws
from rcnnlib.rcnn.model import (
    ModelCard,
    ModelConfig,
    blend_proba,
    build_model,
    last_step_proba,
    load_model,
    predict_proba,
    pretrained_dir,
    save_model,
)
from rcnnlib.rcnn.preprocess import PreprocessConfig, prepare
from rcnnlib.rcnn.stream import StreamingClassifier
from rcnnlib.rcnn.train import FineTuneConfig

pytestmark = pytest.mark.xdist_group("tensorflow")  # one process builds TF graphs; the other runs the rest

TINY = ModelConfig(conv_filters=(4, 4), dense_units=8, lstm_units=8)


@pytest.fixture(scope="module")
def real(real_hits) -> SequenceDataset:
    return first_per_class(real_hits, 14)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A small untrained model, saved: enough to test plumbing, not accuracy."""
    import keras

    keras.utils.set_random_seed(0)
    folder = tmp_path_factory.mktemp("tiny") / "model"
    save_model(build_model(TINY), folder, ModelCard(config=TINY, model="tiny, untrained", seed=0))
    return folder


def test_model_follows_its_config():
    model = build_model(TINY)
    assert model.output_shape == (None, 20, 7)
    bigger = build_model(replace(TINY, lstm_units=16))
    assert bigger.count_params() > model.count_params()
    shorter = build_model(replace(TINY, preprocess=PreprocessConfig(n_steps=8)))
    assert shorter.output_shape == (None, 8, 7)
    with pytest.raises(InputError, match="same length"):
        build_model(replace(TINY, conv_strides=(1,)))
    assert ModelConfig.from_dict(json.loads(json.dumps(TINY.to_dict()))) == TINY


def test_masked_steps_do_not_change_valid_outputs(real, tiny_model_dir):
    model, config, _ = load_model(tiny_model_dir)
    inputs = prepare(real.subset(np.arange(6)), config.preprocess)
    mask = inputs.step_mask.copy()
    mask[:, 10:] = False
    noisy = inputs.x.copy()
    noisy[:, 10:] = np.random.default_rng(0).normal(size=noisy[:, 10:].shape)
    a = predict_proba(model, inputs.x, mask)
    b = predict_proba(model, noisy, mask)
    np.testing.assert_allclose(a[:, :10], b[:, :10], atol=1e-6)
    np.testing.assert_allclose(last_step_proba(a, mask), a[:, 9], atol=0)
    np.testing.assert_allclose(a.sum(-1), 1.0, rtol=1e-5)


def test_save_load_round_trip(real, tiny_model_dir, tmp_path):
    model, config, card = load_model(tiny_model_dir)
    assert card.model == "tiny, untrained" and card.seed == 0 and config == card.config == TINY
    inputs = prepare(real.subset(np.arange(4)), config.preprocess)
    again = save_model(model, tmp_path / "copy", card)
    model2, config2, _ = load_model(again)
    assert config2 == config
    np.testing.assert_array_equal(
        predict_proba(model, inputs.x, inputs.step_mask), predict_proba(model2, inputs.x, inputs.step_mask)
    )
    assert not list((tmp_path / "copy").glob(".*partial*")), "temporary files left behind"


def test_bad_model_folder_is_named(tmp_path):
    with pytest.raises(InputError, match=r"model\.keras is missing"):
        load_model(tmp_path)
    (tmp_path / "model.keras").write_text("not a zip")
    (tmp_path / "card.json").write_text(json.dumps({"config": TINY.to_dict()}))
    with pytest.raises(InputError, match="unreadable Keras model"):
        load_model(tmp_path)


@pytest.mark.parametrize("legacy", [False, True], ids=["matched+changes", "unmatched-stamps-only"])
def test_streaming_equals_batch(real, tiny_model_dir, legacy):
    model, config, _ = load_model(tiny_model_dir)
    if legacy:  # the preprocessing of models saved before PSF matching and relative-change channels
        config = replace(
            config, preprocess=replace(config.preprocess, psf_match_seeing=None, difference_channels=False)
        )
        model = build_model(config)
    assert_stream_matches_batch(model, config, real.subset([0, 20, 40]))


def assert_stream_matches_batch(model, config: ModelConfig, ds: SequenceDataset) -> None:
    """After each new step, the stream must give the batch's probabilities."""
    for i, (batch, stream) in enumerate(stream_and_batch(model, config, ds)):
        assert len(batch) > 0, ds.ids[i]
        np.testing.assert_allclose(stream, batch, atol=1e-5, err_msg=ds.ids[i])


def test_streaming_equals_batch_for_the_shipped_model_on_real_sequences(real):
    """The trained network (not only an untrained one) on one real sequence of each class."""
    model, config, _ = load_model()
    ds = real.subset([np.flatnonzero(real.labels == c)[1] for c in np.unique(real.labels)])
    assert len(np.unique(ds.labels)) == 4
    assert_stream_matches_batch(model, config, ds)


def test_streaming_applies_the_temperature(real, tiny_model_dir):
    """A fitted temperature reaches the alert stream: the batch probabilities, scaled, same class."""
    from rcnnlib.calibration import apply_temperature

    model, config, _ = load_model(tiny_model_dir)
    plain = StreamingClassifier(model=model, config=config)
    warm = StreamingClassifier(model=model, config=config, temperature=0.3)
    ds = real.subset([5])
    for t in np.flatnonzero(ds.mask[0]):
        a = plain.update(ds.stamps[0, t], ds.mjd[0, t], ds.conditions[0, t])
        b = warm.update(ds.stamps[0, t], ds.mjd[0, t], ds.conditions[0, t])
    np.testing.assert_allclose(b, apply_temperature(a, 0.3), rtol=1e-5)
    assert b.max() > a.max() and b.argmax() == a.argmax()
    with pytest.raises(InputError, match="temperature"):
        StreamingClassifier(model=model, config=config, temperature=0.0)


def test_classifiers_of_one_model_share_one_compiled_step_but_not_their_state(real, tiny_model_dir):
    """A broker runs a classifier per object: one traced graph per model, one LSTM state per object."""
    model, config, _ = load_model(tiny_model_dir)
    first, second = (StreamingClassifier(model=model, config=config) for _ in range(2))
    assert first._step is second._step
    assert StreamingClassifier(model=build_model(config), config=config)._step is not first._step
    alone = StreamingClassifier(model=model, config=config)
    ds = real.subset([0, 20])
    for t in np.flatnonzero(ds.mask[0] & ds.mask[1]):  # two objects' alerts, interleaved
        got = first.update(ds.stamps[0, t], ds.mjd[0, t], ds.conditions[0, t])
        second.update(ds.stamps[1, t], ds.mjd[1, t], ds.conditions[1, t])
        expected = alone.update(ds.stamps[0, t], ds.mjd[0, t], ds.conditions[0, t])
        assert (got is None) == (expected is None)
        if got is not None:
            np.testing.assert_array_equal(got, expected)
    assert first.n_steps > 0


def test_streaming_rejects_bad_input(tiny_model_dir):
    stream = StreamingClassifier(tiny_model_dir)
    good = [1.2, 200.0, 25.0, 23.0, 86.0, 1.1]
    with pytest.raises(InputError, match="21x21"):
        stream.update(np.zeros((20, 21)), 57000.0, good)
    with pytest.raises(InputError, match="non-finite"):
        stream.update(np.full((21, 21), np.nan), 57000.0, good)
    with pytest.raises(InputError, match="conditions"):
        stream.update(np.zeros((21, 21)), 57000.0, good[:3])
    assert stream.update(np.zeros((21, 21)), 57000.0, good) is None  # one epoch is not a step yet
    with pytest.raises(InputError, match="time order"):
        stream.update(np.zeros((21, 21)), 56999.0, good)
    bad_seeing = dict(
        zip(("seeing", "sky", "zero_point", "limit_mag_5sigma", "exp_time", "airmass"), good, strict=True)
    )
    bad_seeing["seeing"] = 2.4
    assert stream.update(np.zeros((21, 21)), 57001.0, bad_seeing) is None
    assert stream.n_epochs == 2 and len(stream._buffer) == 1


def test_fine_tuning_draws_are_disjoint_from_test_sets(real):
    draws = few_shot_draws(real.labels, 10, 4, seed=5)
    for draw in draws:
        assert not set(draw.train) & set(draw.test)
        assert len(draw.train) + len(draw.test) == len(real)
        assert (np.bincount(real.labels[draw.train])[np.unique(real.labels)] == 10).all()
    assert not np.array_equal(draws[0].train, draws[1].train)
    again = few_shot_draws(real.labels, 10, 2, seed=5)
    np.testing.assert_array_equal(again[1].train, draws[1].train)
    with pytest.raises(InputError, match="nothing would be left"):
        few_shot_draws(real.labels, 14, 1, seed=0)


def test_evaluate_protocol_schema(real, tiny_model_dir):
    from rcnnlib.rcnn.evaluate import Evaluation, argmax_among, evaluate_on_real, recall_table

    result = evaluate_on_real(
        real,
        tiny_model_dir,
        finetune_per_class=4,
        repeats=2,
        seed=1,
        finetune_config=FineTuneConfig(epochs=1),
        progress=False,
    )
    classes = ["SN", "RRL", "EB", "NV"]
    assert result.classes == classes
    for scores in (result.sim_only, result.fine_tuned, result.fine_tuned_alone):
        assert set(scores.recall) == set(classes)
        assert 0.0 <= scores.macro_recall <= 1.0
        assert scores.macro_recall == pytest.approx(np.mean(list(scores.recall.values())))
    assert result.fine_tuned.macro_recall_std >= 0.0
    assert result.n_test == {name: 10 for name in classes}
    # every test prediction is of a sequence outside that repeat's fine-tuning draw
    draws = few_shot_draws(real.labels, 4, 2, seed=1)
    for draw, pred in zip(draws, result.fine_tuned_predictions, strict=True):
        assert (pred[draw.train] == -1).all() and (pred[draw.test] >= 0).all()
    assert result.fine_tuned_confusion.sum() == 2 * 40
    table = recall_table(result).splitlines()
    assert "tuned alone" in table[0] and len(table) == 1 + len(classes) + 1
    assert f"{result.fine_tuned_alone.macro_recall:.3f}" in table[-1]
    # the JSON (rcnnlib evaluate --json) reads back as the same evaluation
    data = json.loads(json.dumps(result.to_json()))
    assert set(data) >= {"model", "classes", "n_sequences", "sim_only_all", "sim_only", "fine_tuned"}
    assert {"fine_tuned_alone", "n_test", "protocol"} <= set(data)
    assert {"predictions", "confusion", "early_recall", "difference", "config"} <= set(data["fine_tuned"])
    back = Evaluation.from_json(data)
    assert back.to_json() == data
    assert back.fine_tuned == result.fine_tuned and back.sim_only == result.sim_only
    np.testing.assert_array_equal(back.fine_tuned_predictions, result.fine_tuned_predictions)
    # calibration: the sim-only temperatures come from the draws' adaptation sequences, one per draw
    assert len(back.calibration["sim_only_scaled"].temperatures) == 2
    assert back.calibration["fine_tuned"].ece == pytest.approx(result.calibration["fine_tuned"].ece)
    # the four real classes only: the arg-max of the same probabilities over SN, RRL, EB, NV
    assert back.real_classes_only == result.real_classes_only
    real_ids = [CLASS_NAMES.index(c) for c in classes]
    for name, proba in (("fine_tuned", result.fine_tuned_proba), ("sim_only", result.sim_only_proba)):
        among = argmax_among(np.broadcast_to(proba, result.fine_tuned_proba.shape), real_ids)
        runs = [Recall.of(real.labels[d.test], among[d.repeat][d.test], CLASS_NAMES, real_ids) for d in draws]
        four = result.real_classes_only[name]
        assert four.macro_recall == pytest.approx(np.mean([r.macro_recall for r in runs]))


def test_real_classes_only_is_the_arg_max_over_the_real_classes(real, tmp_path):
    """A network that calls everything a Cepheid scores 0 seven-way; four-way it must answer otherwise."""
    import keras

    from rcnnlib.rcnn.evaluate import evaluate_on_real

    keras.utils.set_random_seed(0)
    model = build_model(TINY)
    weights, bias = model.layers[-1].get_weights()
    bias[CLASS_NAMES.index("CEP")] += 20.0
    model.layers[-1].set_weights([weights, bias])
    save_model(model, tmp_path / "model", ModelCard(config=TINY, model="tiny, all Cepheids", seed=0))
    result = evaluate_on_real(
        real, tmp_path / "model", 2, 2, seed=1, finetune_config=FineTuneConfig(epochs=1), progress=False
    )
    assert (result.sim_only_predicted == CLASS_NAMES.index("CEP")).all()
    assert result.sim_only.macro_recall == 0.0
    four = result.real_classes_only["sim_only"]
    assert four.macro_recall > 0.0 and set(four.recall) == {"SN", "RRL", "EB", "NV"}
    assert four.macro_recall_ci is not None


def test_argmax_among_keeps_to_the_given_classes():
    from rcnnlib.rcnn.evaluate import argmax_among

    proba = np.array([[0.1, 0.6, 0.3], [0.5, 0.2, 0.3], [np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(argmax_among(proba, [0, 2]), [2, 0, -1])
    np.testing.assert_array_equal(argmax_among(proba, [0, 1, 2]), [1, 0, -1])


def test_learning_curve_is_evaluate_at_each_value(real, tiny_model_dir):
    from rcnnlib.rcnn.evaluate import evaluate_on_real, learning_curve, learning_curve_json

    config = FineTuneConfig(epochs=1)
    curve = learning_curve(
        real, tiny_model_dir, [0, 2], repeats=2, seed=4, finetune_config=config, progress=False
    )
    single = evaluate_on_real(real, tiny_model_dir, 2, 2, 4, finetune_config=config, progress=False)
    assert curve[0].fine_tuned is None and curve[0].adapted.macro_recall == curve[0].sim_only_all.macro_recall
    assert curve[1].fine_tuned.per_repeat == pytest.approx(single.fine_tuned.per_repeat)
    data = json.loads(json.dumps(learning_curve_json(curve)))
    assert data["learning_curve"]["finetune_per_class"] == [0, 2]
    assert data["learning_curve"]["macro_recall"][1] == pytest.approx(single.fine_tuned.macro_recall)
    assert len(data["evaluations"]) == 2 and "fine_tuned" not in data["evaluations"][0]


def test_blend_keeps_what_each_model_is_sure_of():
    tuned = np.array([[0.90, 0.05, 0.05], [0.40, 0.35, 0.25], [0.2, 0.2, 0.6]])
    base = np.array([[0.50, 0.45, 0.05], [0.05, 0.90, 0.05], [0.2, 0.2, 0.6]])
    np.testing.assert_allclose(blend_proba(tuned, base, 0.0), tuned, rtol=1e-6)
    np.testing.assert_allclose(blend_proba(tuned, base, 1.0), base, rtol=1e-6)
    half = blend_proba(tuned, base, 0.5)
    np.testing.assert_allclose(half.sum(-1), 1.0, rtol=1e-6)
    # the hesitant model gives way to the confident one; agreement stays agreement
    assert half.argmax(-1).tolist() == [0, 1, 2]
    np.testing.assert_allclose(half[2], tuned[2], rtol=1e-6)
    assert np.isfinite(blend_proba(np.eye(3), np.eye(3)[::-1], 0.5)).all()
    with pytest.raises(ValueError, match="base_weight"):
        blend_proba(tuned, base, 1.5)
    with pytest.raises(InputError, match="base weight"):
        FineTuneConfig(base_weight=-0.1)


def test_fine_tuned_prediction_with_full_base_weight_is_the_base_models(real, tiny_model_dir):
    from rcnnlib.rcnn.evaluate import evaluate_on_real

    result = evaluate_on_real(
        real,
        tiny_model_dir,
        finetune_per_class=4,
        repeats=2,
        seed=3,
        finetune_config=FineTuneConfig(epochs=2, learning_rate=1e-2, base_weight=1.0),
        progress=False,
    )
    assert result.fine_tuned.recall == pytest.approx(result.sim_only.recall)
    assert result.finetune_config["base_weight"] == 1.0


def _run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rcnnlib.cli", *args], capture_output=True, text=True, check=False, cwd=cwd
    )


def test_cli_errors_are_one_line(tmp_path, tiny_model_dir):
    proc = _run_cli("evaluate", "--hits-dir", str(tmp_path / "nowhere"), "--model", str(tiny_model_dir))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "nowhere" in proc.stderr
    bad = tmp_path / "bad.npz"
    np.savez(bad, stamps=np.zeros((5, 21, 21)))
    proc = _run_cli("classify", str(bad), "--model", str(tiny_model_dir))
    assert proc.returncode == 2 and "missing array 'mjd'" in proc.stderr and "bad.npz" in proc.stderr
    proc = _run_cli("classify", str(tmp_path / "x.txt"))
    assert proc.returncode == 2 and "no such file" in proc.stderr
    proc = _run_cli("evaluate", "--model", str(tmp_path), "--repeats", "0")
    assert proc.returncode == 2 and "--repeats" in proc.stderr
    proc = _run_cli("evaluate", "--model", str(tmp_path), "--base-weight", "1.5")
    assert proc.returncode == 2 and "--base-weight" in proc.stderr and "Traceback" not in proc.stderr


def test_classify_npz_and_fits_agree(real, tiny_model_dir, tmp_path):
    from astropy.io import fits
    from astropy.table import Table

    from rcnnlib.rcnn.classify import classify, read_sequences

    ds = real.subset([3])
    t = np.flatnonzero(ds.mask[0])
    names = ("seeing", "sky", "zero_point", "limit_mag_5sigma", "exp_time", "airmass")
    np.savez(tmp_path / "one.npz", stamps=ds.stamps[0, t], mjd=ds.mjd[0, t], conditions=ds.conditions[0, t])
    table = Table({"MJD": ds.mjd[0, t], **{n.upper(): ds.conditions[0, t, i] for i, n in enumerate(names)}})
    fits.HDUList([fits.PrimaryHDU(ds.stamps[0, t]), fits.BinTableHDU(table)]).writeto(tmp_path / "one.fits")
    a = classify(read_sequences(tmp_path / "one.npz"), tiny_model_dir)
    b = classify(read_sequences(tmp_path / "one.fits"), tiny_model_dir)
    assert [s["probabilities"] for s in a[0]["steps"]] == [s["probabilities"] for s in b[0]["steps"]]
    assert a[0]["steps"] and a[0]["class"] in ds.class_names
    proc = _run_cli(
        "classify",
        str(tmp_path / "one.npz"),
        "--model",
        str(tiny_model_dir),
        "--json",
        str(tmp_path / "p.json"),
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads((tmp_path / "p.json").read_text())[0]["steps"][0]["epochs_seen"] == 3


@pytest.mark.slow
def test_training_is_repeatable_and_writes_a_card(tmp_path):
    """Two trainings with one seed give identical weights; the card records data, seed and figures."""
    from rcnnlib.rcnn.train import TrainConfig, train
    from rcnnlib.sim.simulate import simulate_to_disk
    from rcnnlib.sim.survey import Survey

    survey = Survey.preset("hits2015")
    sims = simulate_to_disk(survey, tmp_path / "sims", 40, seed=2, fields=survey.fields[:1], progress=False)
    config = TrainConfig(
        epochs=1,
        batch_size=32,
        block_size=20,
        mix_blocks=7,
        val_fraction=0.5,
        seed=4,
        learning_rate_decay="cosine",
    )
    small = replace(TINY, preprocess=PreprocessConfig(n_steps=6))
    cards = [train(tmp_path / "sims", tmp_path / f"m{i}", config, small, verbose=0) for i in range(2)]
    weights = [load_model(tmp_path / f"m{i}")[0].get_weights() for i in range(2)]
    for a, b in zip(*weights, strict=True):
        np.testing.assert_array_equal(a, b)
    card = cards[0]
    assert card.training_data["fingerprint"] == sims.fingerprint
    assert card.seed == 4 and card.epochs_run == 1
    # cosine decay: the rate has annealed to 1 % of the initial one after the last epoch
    assert card.final_learning_rate == pytest.approx(0.01 * small.learning_rate, rel=1e-3)
    assert 0.0 <= card.validation["step_accuracy"] <= 1.0
    assert card.training_data["n_train_sequences"] + card.training_data["n_val_sequences"] == len(sims)


def test_unknown_learning_rate_decay_is_refused():
    from rcnnlib.rcnn.train import TrainConfig

    with pytest.raises(InputError, match="learning_rate_decay must be one of"):
        TrainConfig(learning_rate_decay="linear")


def test_shipped_model_has_a_card():
    card = json.loads((pretrained_dir() / "card.json").read_text())
    for key in ("training_data", "seed", "training_time_s", "validation", "train_config", "config"):
        assert key in card, key
    assert card["training_data"]["n_train_sequences"] > 10_000
    model, config, typed = load_model()
    assert model.output_shape[-1] == len(config.class_names)
    # the typed card reads every key and writes the same object back (a hand-added key included)
    assert json.loads(json.dumps(typed.to_json())) == card
    with_note = ModelCard.from_json({**card, "reviewed_by": "someone"})
    assert json.loads(json.dumps(with_note.to_json())) == {**card, "reviewed_by": "someone"}


def test_epoch_yields_exactly_the_announced_batches(tmp_path):
    """Uneven blocks (shards not a multiple of the block size) still give the announced batch count."""
    from rcnnlib.rcnn.train import TrainConfig, batches_per_epoch, epoch_batches, plan_blocks
    from rcnnlib.shards import open_sequences
    from rcnnlib.sim.simulate import simulate_to_disk
    from rcnnlib.sim.survey import Survey

    survey = Survey.preset("hits2015")
    simulate_to_disk(survey, tmp_path / "sims", 13, seed=1, fields=survey.fields[:1], progress=False)
    blocks = plan_blocks(open_sequences(tmp_path / "sims"), block_size=5)  # 5 + 5 + 3 per shard
    config = TrainConfig(batch_size=8, mix_blocks=3, augmentation=None)
    batches = list(epoch_batches(blocks, config, TINY, epoch=0))
    assert len(batches) == batches_per_epoch(blocks, config) == 7 * 13 // 8
    assert all(len(y) == 8 for _, y, _ in batches)
    # every sequence at most once per epoch (no augmentation: equal inputs are the same sequence),
    # and only the last partial batch (3 of 91) is left out, so each class keeps 10 to 13 of its 13
    x = np.concatenate([inputs["x"] for inputs, _, _ in batches])
    assert len({row.tobytes() for row in x}) == len(x) == 88
    labels = np.concatenate([y[:, 0] for _, y, _ in batches])
    counts = np.bincount(labels, minlength=7)
    assert counts.size == 7 and counts.min() >= 10 and counts.max() <= 13, counts


FINE_TUNED_FLOOR = 0.92  # issue 16's guard; the shipped model scores 0.936 (draws 0.942, 0.935, 0.929)


@pytest.mark.slow
def test_fine_tuning_the_shipped_model_keeps_the_papers_headline(real_hits):
    """The paper's protocol on every real HiTS sequence: 3 draws of 10 per class, fine-tuned as shipped."""
    from rcnnlib.rcnn.evaluate import evaluate_on_real

    result = evaluate_on_real(real_hits, None, finetune_per_class=10, repeats=3, seed=0, progress=False)
    assert result.fine_tuned is not None and len(result.fine_tuned.per_repeat) == 3
    assert result.fine_tuned.macro_recall >= FINE_TUNED_FLOOR, result.fine_tuned.per_repeat
