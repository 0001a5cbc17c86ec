"""Inception-v3, the paper's baseline on ImageNet, with the paper's recipe.

    python -m inception_jax.main --config=configs/iv3.py --workdir=/path/to/workdir \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

The paper's single-crop top-1 / top-5 error on ImageNet val: 21.2 / 5.6 %.
"""

from configs import default


def get_config():
  return default.for_model('inception_v3')
