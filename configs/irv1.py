"""Inception-ResNet-v1 (paper Figs. 10-15) on ImageNet: alias of configs/imagenet.py:irv1.

    python -m inception_jax.main --config=configs/irv1.py --workdir=/path/to/workdir \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

The paper's single-crop top-1 / top-5 error on ImageNet val: 21.3 / 5.5 %.
"""

from . import imagenet


def get_config():
  return imagenet.get_config('irv1')
