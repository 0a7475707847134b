"""Optuna sweeps over experiment configs: settings and search spaces, storage, the objective, the
worker loop that reaches exactly `n_trials` finished trials, and the artifacts a sweep leaves behind.

`xalign tune` (`pipeline.tune`) is the command; this package holds its parts.
"""
