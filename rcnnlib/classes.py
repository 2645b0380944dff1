"""Canonical class names shared by the simulator, the real-data loader and the models.

Labels are indices into :data:`CLASS_NAMES` everywhere, so a model trained on
simulations scores real sequences without any relabelling.
"""

CLASS_NAMES: tuple[str, ...] = ("SN", "RRL", "CEP", "EB", "NV", "AST", "EMPTY")
"""All seven simulated classes, in label order."""

REAL_CLASS_NAMES: tuple[str, ...] = ("SN", "RRL", "EB", "NV")
"""The four classes with real labelled HiTS sequences."""


def label_of(name: str) -> int:
    """Integer label of a canonical class name (ValueError names the valid ones)."""
    try:
        return CLASS_NAMES.index(name)
    except ValueError:
        raise ValueError(f"unknown class {name!r}; expected one of {', '.join(CLASS_NAMES)}") from None
