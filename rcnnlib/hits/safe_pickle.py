"""Read the HiTS authors' ``.npy`` files without trusting the pickles inside them.

The star stamps of HiTS (``EB/``, ``RRLyrae/``, ``real_constants/``) are numpy
files whose payload is a Python 2 pickle of a dict (npy header ``descr '|O'``,
shape ``()``). A pickle can call any importable function while it loads, so
``np.load(allow_pickle=True)`` on a downloaded file would run whatever the file
asks for. Here the npy header is parsed with :mod:`numpy.lib.format` and the
payload is unpickled by :class:`RestrictedUnpickler`, which resolves only the
few numpy globals an object array needs (see :data:`ALLOWED_GLOBALS`); any
other global is refused *before* it is called, with an :class:`InputError`
naming the file and the global.

Plain (non-object) npy arrays are read with ``allow_pickle=False``. Files that
are not npy, are truncated or are otherwise unreadable also raise
:class:`InputError` naming the file, never a bare numpy or pickle exception.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from rcnnlib.errors import InputError

try:  # numpy >= 2 keeps the implementation in numpy._core; numpy.core is a deprecated alias
    from numpy._core import multiarray as _multiarray
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]

_SAFE_OBJECTS: dict[str, Callable[..., Any]] = {
    "ndarray": np.ndarray,
    "dtype": np.dtype,
    "_reconstruct": _multiarray._reconstruct,
    # builds a numpy scalar from a dtype and its raw bytes; not used by the HiTS files seen so
    # far but written by numpy for any scalar inside a pickled dict, and it runs no user code.
    "scalar": _multiarray.scalar,
}

ALLOWED_GLOBALS: dict[tuple[str, str], str] = {
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",
    ("numpy.core.multiarray", "scalar"): "scalar",
    ("numpy._core.multiarray", "scalar"): "scalar",
}
"""(module, name) pairs a pickle may reference, mapped to the object they resolve to."""


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle referenced a global outside :data:`ALLOWED_GLOBALS`."""

    def __init__(self, module: str, name: str):
        self.qualname = f"{module}.{name}"
        super().__init__(f"refusing to unpickle {self.qualname}")


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only :data:`ALLOWED_GLOBALS`; Python 2 strings are read as latin-1."""

    def __init__(self, file: io.BufferedIOBase | io.BytesIO) -> None:
        super().__init__(file, encoding="latin1")

    def find_class(self, module: str, name: str) -> Any:
        key = ALLOWED_GLOBALS.get((module, name))
        if key is None:
            raise RefusedGlobalError(module, name)
        return _SAFE_OBJECTS[key]

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("persistent ids are not supported")


def safe_loads(data: bytes, source: str | Path | None = None) -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; failures raise :class:`InputError`."""
    try:
        return RestrictedUnpickler(io.BytesIO(data)).load()
    except RefusedGlobalError as exc:
        raise InputError(f"{exc} (only numpy arrays and dtypes are allowed in these files)", source) from None
    except Exception as exc:  # any failure of a foreign or truncated pickle is bad input
        problem = f"unreadable pickle payload (truncated or corrupted?): {_describe(exc)}"
        raise InputError(problem, source) from None


def _describe(exc: BaseException) -> str:
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _read_header(fh: io.BufferedIOBase, path: Path) -> tuple[tuple[int, ...], bool, np.dtype]:
    try:
        version = npy_format.read_magic(fh)
    except ValueError as exc:
        if str(exc).startswith("EOF"):  # shorter than the 8-byte magic string
            problem = "empty file" if fh.tell() == 0 else "truncated file (shorter than a .npy header)"
            raise InputError(problem, path) from None
        raise InputError("not a .npy file (bad magic string)", path) from None
    try:
        if version == (1, 0):
            return npy_format.read_array_header_1_0(fh)
        if version == (2, 0):
            return npy_format.read_array_header_2_0(fh)
    except Exception as exc:  # malformed header text or a file cut inside it
        raise InputError(f"unreadable .npy header (truncated file?): {_describe(exc)}", path) from None
    raise InputError(f"unsupported .npy format version {version[0]}.{version[1]}", path)


def safe_load_npy(path: str | Path) -> np.ndarray:
    """Read a ``.npy`` file: plain arrays directly, object arrays through the restricted unpickler.

    Returns the array exactly as ``np.load`` would (a 0-d object array for the HiTS
    star files; use :func:`load_pickled_dict` to get their dict).
    """
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            shape, _fortran, dtype = _read_header(fh, path)
            if not dtype.hasobject:
                fh.seek(0)
                try:
                    array = np.load(fh, allow_pickle=False)
                except Exception as exc:  # short read, bad size: bad input either way
                    problem = f"unreadable .npy data (truncated file?): {_describe(exc)}"
                    raise InputError(problem, path) from None
                return array
            payload = fh.read()
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except IsADirectoryError:
        raise InputError("is a directory, expected a .npy file", path) from None
    except PermissionError:
        raise InputError("permission denied", path) from None
    if dtype != np.dtype(object):
        raise InputError(f"unsupported .npy dtype with embedded objects: {dtype}", path)
    array = safe_loads(payload, path)
    if not isinstance(array, np.ndarray) or array.dtype != np.dtype(object) or array.shape != shape:
        raise InputError(
            f"pickle payload is {type(array).__name__}, not the object array of shape {shape} "
            "announced by the header",
            path,
        )
    return array


def load_pickled_dict(path: str | Path) -> dict[str, Any]:
    """The dict stored in a 0-d object ``.npy`` file (the HiTS star stamp format)."""
    path = Path(path)
    array = safe_load_npy(path)
    if array.shape != () or not isinstance(array.item(), dict):
        problem = f"expected a pickled dict in a 0-d object array, got {array.dtype} {array.shape}"
        raise InputError(problem, path)
    return array.item()
