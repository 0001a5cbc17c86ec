"""Inception-ResNet-v2 as released on ImageNet: alias of configs/imagenet.py:irv2.

The network that TF-slim, timm and Keras released, which their public weights fit.

    python -m inception_jax.main --config=configs/irv2.py --workdir=/path/to/workdir \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

The paper's single-crop top-1 / top-5 error on ImageNet val: 19.9 / 4.9 % (reported for the
paper's own network, configs/irv2_paper.py).
"""

from . import imagenet


def get_config():
  return imagenet.get_config('irv2')
