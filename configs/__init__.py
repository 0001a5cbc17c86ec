"""Experiment configs, run as `python -m inception_jax.main --config=configs/X.py[:ARG]`."""
