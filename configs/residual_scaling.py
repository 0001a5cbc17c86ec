"""The paper's residual-scaling claim (Section 3.3) as an experiment that runs on one CPU machine.

    python -m inception_jax.main --config=configs/residual_scaling.py:1.0 --workdir=/tmp/rs/1.0

SCALE, the argument: the factor on every residual branch before the addition, `1.0` (no scaling,
the default), `0.3`, `0.1`, ..., or `learned`: each block learns its own factor, starting from 1.0
(SkipInit and ReZero start from 0: add --config.model.residual_scale=0.0).
launch/residual_scaling.sh runs the scales with several seeds and plots them together.

The paper's condition is an Inception-ResNet with more than about 1000 filters: this is the paper's
own Inception-ResNet-v2 schema (`inception_resnet_v2_paper`, Figs. 15-19) at full width, 1,152
filters in the 17x17 blocks and 2,144 in the 8x8 blocks, whose last layer before the average pool
is the last block's ReLU(x + scale * residual), where the paper saw only zeros. To train here it
keeps one block per grid (`--config.model.repeats=5,10,5` restores the paper's) and the small-input
stem, on scikit-learn's digits at 16x16 (no download; `--config.dataset.name=cifar10` with
`--config.dataset.image_size=32` once CIFAR-10 is prepared). The optimizer is the paper's: RMSProp
(decay 0.9, epsilon 1.0), learning rate 0.045 (at this config's batch of 64) decayed by 0.94 every
2 epochs, gradients clipped at 2.0, evaluation with averaged parameters. The dying-network
diagnostics are on (they are for every Inception-ResNet): `dead_fraction`, `dead_channels` and
the residual ratios per grid, in metrics.jsonl and TensorBoard.
"""

from . import default

SCALES = ('1.0', '0.3', '0.1', 'learned')  # the study's; any float works


def get_config(arg: str | None = '1.0'):
  if arg != 'learned':
    try:
      scale = float(arg)
    except (TypeError, ValueError):
      default.argument('configs/residual_scaling.py', arg, SCALES)
    if not 0.0 <= scale < float('inf'):
      raise ValueError(f'configs/residual_scaling.py:{arg}: the scale must be a finite number '
                       '>= 0, e.g. --config=configs/residual_scaling.py:0.3.')
  config = default.get_config()
  config.model.name = 'inception_resnet_v2_paper'
  config.model.repeats = (1, 1, 1)
  config.model.small_inputs = True
  config.model.scan_blocks = True
  config.model.bn_momentum = 0.9  # a short run needs BatchNorm averages that settle quickly
  if arg == 'learned':
    config.model.residual_scale = 1.0
    config.model.learn_residual_scale = True
  else:
    config.model.residual_scale = scale
  config.dataset.name = 'digits'
  config.dataset.image_size = 16
  config.batch_size = 64
  config.eval_batch_size = 128
  config.reference_batch_size = 64  # the paper's 0.045 at this batch
  config.num_epochs = 8.0
  # In epochs, so that another dataset keeps the rhythm (digits: 23 steps per epoch).
  default.in_epochs(config, log=0.2, evaluate=1.0, checkpoint=2.0)
  return config
