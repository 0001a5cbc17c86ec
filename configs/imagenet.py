"""ImageNet at 299x299 with the paper's recipe; the model is chosen by the config argument.

    python -m inception_jax.main --config=configs/imagenet.py:irv2 --workdir=/path/to/workdir \
        --config.dataset.data_dir=/path/to/tensorflow_datasets

Arguments: iv3, iv4, irv1, irv2 (default), irv2_paper (configs/default.py's MODELS). Each has an
alias, configs/ARG.py, whose docstring quotes the paper's single-crop error for that model.
"""

from . import default


def get_config(arg: str = 'irv2'):
  return default.for_argument('configs/imagenet.py', arg)
