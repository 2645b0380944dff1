"""rcnnlib: simulate, classify and evaluate astronomical image sequences (HiTS 2015).

Reproduces Carrasco-Davis et al. (2019), PASP 131, 108006.
"""

from rcnnlib.logs import configure_logging

configure_logging()  # before anything imports TensorFlow: no log lines unless RCNNLIB_VERBOSE=1

from rcnnlib.classes import CLASS_NAMES, REAL_CLASS_NAMES  # noqa: E402
from rcnnlib.dataset import CONDITION_NAMES, SequenceDataset  # noqa: E402

__version__ = "0.1.0"

__all__ = ["CLASS_NAMES", "CONDITION_NAMES", "REAL_CLASS_NAMES", "SequenceDataset", "__version__"]
