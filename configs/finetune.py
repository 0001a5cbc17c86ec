"""Fine-tuning a pretrained network on your own images or CIFAR-10; the argument picks the model.

    python -m inception_jax.convert --source=timm --model=inception_resnet_v2 \
        --input=model.safetensors --output=/path/to/irv2_timm
    python -m inception_jax.main --config=configs/finetune.py:irv2 --workdir=/path/to/workdir \
        --config.init_from=/path/to/irv2_timm --config.dataset.name=folder:/path/to/images

Arguments: iv3, iv4, irv1, irv2 (default), irv2_paper (configs/default.py's MODELS), and each with
`_probe` (e.g. `--config=configs/finetune.py:irv2_probe`): a linear probe, which trains the
classifiers alone (`config.trainable_scopes='Logits,AuxLogits'`; the aux head's pattern applies
where `config.model.aux_logits` adds one) and keeps the pretrained layers frozen, BatchNorm
statistics included: the backbone computes no gradient, and a step costs a fraction of a full one.
`config.init_from` is required: a directory written by `python -m inception_jax.convert` or a
training workdir. Options the network's variables depend on and the config leaves unset, such as
the `bn_scale=True` of weights converted from timm (and timm's Inception-v3
`avg_pool_include_pad=True`), are taken from the checkpoint's model.json, as the job's first line
says; an option set to another value stops the job, naming it.

The recipe follows TF-slim's fine-tuning example (scripts/finetune_inception_v3_on_flowers.sh:
RMSProp, batch 32, a fixed learning rate of 0.01 for the new classifier alone, then 0.0001 for all
layers). Training every layer at once from the start, we take 0.001 after a one-epoch linear
warm-up, which keeps the fresh classifier's first gradients from wrecking the pretrained layers.
Images are resized to the network's own input size (299), as it was pretrained. Logs, evaluations
and checkpoints come at fractions of an epoch, so a folder of a few hundred images logs every step
or two and evaluates every epoch; the eval batch shrinks to the eval split when that is smaller.
BatchNorm's moving averages adapt faster (momentum 0.99) to the new images' statistics. A starting
point, not a tuned result. The probe takes TF-slim's first stage as it is: learning rate 0.01, fixed
from the first step (the warm-up protects pretrained layers that the probe does not train).
"""


from . import default

PROBE = '_probe'  # the suffix of the arguments that train the classifiers alone


def get_config(arg: str = 'irv2'):
  default.argument('configs/finetune.py', arg,
                   [*default.MODELS, *(model + PROBE for model in default.MODELS)])
  probe = arg.endswith(PROBE)
  config = default.for_argument('configs/finetune.py', arg[:-len(PROBE)] if probe else arg)
  config.required = ('init_from',)
  config.dataset.name = 'cifar10'  # or folder:PATH; prepare CIFAR-10 with inception_jax.prepare
  config.dataset.image_size = 299  # every network here was pretrained at 299x299
  config.model.bn_momentum = 0.99
  config.batch_size = 32
  config.eval_batch_size = 64  # lowered by the job to the eval split's size when it is smaller
  config.num_epochs = 10.0
  config.learning_rate = 0.001
  config.reference_batch_size = 32
  config.warmup_epochs = 1.0
  config.lr_decay_rate = 1.0  # fixed after the warm-up
  default.in_epochs(config, log=0.1, evaluate=1.0, checkpoint=1.0)
  if probe:
    config.trainable_scopes = 'Logits,AuxLogits'
    config.learning_rate = 0.01
    config.warmup_epochs = 0.0
  return config
