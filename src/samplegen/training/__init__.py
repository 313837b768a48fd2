"""Fitting a model: the loop, the feature cache, normalisation statistics, data parallelism."""
