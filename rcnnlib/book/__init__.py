"""The book runner (parameters, cache, execution, HTML, PDF), its figures, tables and page checks.

No re-exports: import the modules (the book runner's cache follows imports module by module)."""
