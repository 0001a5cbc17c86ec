"""Inception-v3, the paper's baseline, on ImageNet: alias of configs/imagenet.py:iv3.

    python -m inception_jax.main --config=configs/iv3.py --workdir=/path/to/workdir \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

The paper's single-crop top-1 / top-5 error on ImageNet val: 21.2 / 5.6 %.
"""

from . import imagenet


def get_config():
  return imagenet.get_config('iv3')
