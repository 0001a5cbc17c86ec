"""Inception-ResNet-v2 per the paper's own schema on ImageNet, with the paper's recipe.

    python -m inception_jax.main --config=configs/irv2_paper.py --workdir=/path/to/workdir \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

The paper's single-crop top-1 / top-5 error on ImageNet val: 19.9 / 4.9 (reported for the paper's network) %.
"""

from configs import default


def get_config():
  return default.for_model('inception_resnet_v2_paper')
