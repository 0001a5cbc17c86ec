"""Inception-v4 on ImageNet: alias of configs/imagenet.py:iv4.

    python -m inception_jax.main --config=configs/iv4.py --workdir=/path/to/workdir \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

The paper's single-crop top-1 / top-5 error on ImageNet val: 20.0 / 5.0 %.
"""

from . import imagenet


def get_config():
  return imagenet.get_config('iv4')
