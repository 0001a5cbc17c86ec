"""The embedded demo: a scaled-down Inception-ResNet-v2 learns scikit-learn's handwritten digits.

    python -m inception_jax.main --config=configs/demo.py --workdir=/tmp/inception_demo

No download: the 1,797 8x8 digits ship with scikit-learn (1,500 train / 297 eval, fixed split),
resized to 16x16. The network is Inception-ResNet-v2's code with a quarter of the channels, fewer
blocks and the small-input stem. Expect 99% eval top-1 or better after about a minute and a half on
2 CPU cores.

For tests and smoke runs, the argument `tiny` narrows and shortens it to 8 steps that compile in
seconds yet log, checkpoint and evaluate:

    python -m inception_jax.main --config=configs/demo.py:tiny --workdir=/tmp/inception_tiny
"""

from . import default


def get_config(arg: str | None = None):
  config = default.get_config()
  config.model.name = 'inception_resnet_v2'
  config.model.depth_multiplier = 0.25
  config.model.repeats = (1, 2, 1)
  config.model.small_inputs = True
  config.model.scan_blocks = True  # on CPUs scanned blocks compile faster and train faster
  config.model.bn_momentum = 0.9  # a short run needs BatchNorm averages that settle quickly
  config.dataset.name = 'digits'
  config.dataset.image_size = 16
  config.batch_size = 64
  config.eval_batch_size = 128
  config.num_epochs = 8.0
  config.learning_rate = 0.045
  config.reference_batch_size = 64
  config.lr_decay_epochs = 2.0
  config.log_every_steps = 50
  config.eval_every_steps = 92
  config.checkpoint_every_steps = 92
  if arg is None:
    return config
  default.argument('configs/demo.py', arg, ['tiny'])
  # tiny: an eighth of the channels and one block per grid; checkpoints twice so that tests can
  # resume from the first.
  config.model.depth_multiplier = 0.125
  config.model.repeats = (1, 1, 1)
  config.batch_size = 16
  config.eval_batch_size = 64
  config.num_train_steps = 8
  config.log_every_steps = 2
  config.checkpoint_every_steps = 4
  config.eval_every_steps = 8
  return config
