"""Experiment configs: `get_config()` files for `python -m inception_jax.main --config=configs/X.py`."""
