"""CIFAR-10 at 32x32 with the small-input stem; the model is chosen by the config argument.

    python -m inception_jax.main --config=configs/cifar10.py:irv2 --workdir=/tmp/cifar10_irv2

Arguments: iv3, iv4, irv1, irv2 (default), irv2_paper (configs/default.py's MODELS). Prepare the
data once with `python -m inception_jax.prepare cifar10 --data_dir=DATA_DIR` and pass
`--config.dataset.data_dir=DATA_DIR`. The recipe is the paper's with shorter epochs and milder
crops for tiny images; it is a starting point, not a tuned result.
"""

from . import default


def get_config(arg: str = 'irv2'):
  config = default.for_argument('configs/cifar10.py', arg)
  config.model.small_inputs = True
  config.model.bn_momentum = 0.99
  config.dataset.name = 'cifar10'
  config.dataset.image_size = 32
  config.dataset.min_crop_area = 0.35  # 5% of a 32x32 image is a 7x7 patch: too little to classify
  config.batch_size = 128
  config.eval_batch_size = 500
  config.num_epochs = 100.0
  config.reference_batch_size = 128
  config.lr_decay_epochs = 1.0
  config.log_every_steps = 100
  config.eval_every_steps = 1950
  config.checkpoint_every_steps = 1950
  return config
