"""The machine a benchmark ran on, printed first so that figures are never read without it."""

from __future__ import annotations

import platform
from pathlib import Path

from rcnnlib.rcnn.preprocess import usable_cores


def cpu_name() -> str:
    """The CPU model (``/proc/cpuinfo`` on Linux, else ``platform``'s guess) and the cores usable here."""
    name = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                name = line.partition(":")[2].strip()
                break
    return f"{name}, {usable_cores()} cores"


def describe(tensorflow: bool = False) -> str:
    """One line: the CPU and, with ``tensorflow``, TensorFlow's version and the GPUs it sees (or none)."""
    line = f"device: CPU {cpu_name()}"
    if tensorflow:
        import tensorflow as tf

        gpus = [
            tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name)
            for gpu in tf.config.list_physical_devices("GPU")
        ]
        line += f"; TensorFlow {tf.__version__} on " + (", ".join(gpus) if gpus else "the CPU (no GPU)")
    return line
