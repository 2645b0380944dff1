"""Figure helpers that choose what the book shows."""

from __future__ import annotations

import numpy as np

from rcnnlib.book import figures
from rcnnlib.dataset import CONDITION_NAMES, SequenceDataset


def test_bright_examples_pick_the_quantile_of_each_class():
    n, t = 20, 3
    stamps = np.zeros((n, t, 21, 21), dtype=np.float32)
    peaks = np.arange(n, dtype=np.float32) * 10
    stamps[:, 1, 10, 10] = peaks  # sequence i peaks at 10 i above a zero sky
    labels = np.repeat([0, 4], n // 2)  # SN: 0-9, NV: 10-19
    ds = SequenceDataset(
        stamps,
        np.zeros((n, t)),
        np.zeros((n, t, len(CONDITION_NAMES))),
        np.ones((n, t), bool),
        labels,
        [f"o{i}" for i in range(n)],
    )
    assert figures.bright_examples(ds, quantile=0.9) == {"SN": 9, "NV": 19}
    assert figures.bright_examples(ds, quantile=0.0) == {"SN": 0, "NV": 10}
    assert figures.bright_examples(ds, quantile=0.5) == {"SN": 5, "NV": 15}
