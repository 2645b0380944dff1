"""The light-curve random-forest baseline: features from stamp photometry and the forest.

No re-exports: import the modules (the book runner's cache follows imports module by module)."""
