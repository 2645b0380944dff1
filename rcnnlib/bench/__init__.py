"""Benchmarks: ``python -m rcnnlib.bench [simulate|rcnn|baseline]`` (not installed with the wheel).

No re-exports: import the modules (the book runner's cache follows imports module by module)."""
