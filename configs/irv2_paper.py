"""Inception-ResNet-v2 per the paper's schema, on ImageNet: alias of configs/imagenet.py:irv2_paper.

    python -m inception_jax.main --config=configs/irv2_paper.py --workdir=/path/to/workdir \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

The paper's single-crop top-1 / top-5 error on ImageNet val: 19.9 / 4.9 %.
"""

from . import imagenet


def get_config():
  return imagenet.get_config('irv2_paper')
