"""Real HiTS 2015 data: the loader, the verified download and the safe reading of its pickles.

No re-exports: import the modules (the book runner's cache follows imports module by module)."""
