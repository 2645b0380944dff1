"""The simulator: survey conditions -> light curves -> images -> shard folders, and its realism checks.

No re-exports: import the modules (the book runner's cache follows imports module by module)."""
