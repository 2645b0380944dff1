"""The recurrent convolutional network: pre-processing, model, training, evaluation, streaming, classify.

No re-exports: import the modules (the book runner's cache follows imports module by module)."""
