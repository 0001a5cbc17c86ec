"""The paper's ImageNet recipe; every other config starts from this one and overrides a few fields.

Not run directly: pick a model with configs/imagenet.py's argument, e.g.
    python -m inception_jax.main --config=configs/imagenet.py:irv2 --workdir=/path/to/workdir
"""

from collections.abc import Iterable
from typing import NamedTuple

import ml_collections
from ml_collections import config_dict


class Model(NamedTuple):
  name: str  # a name from inception_jax.models.list_models()
  top1_error: float  # the paper's single-crop top-1 / top-5 error (%) on ImageNet val (Table 2)
  top5_error: float


# The networks that configs/imagenet.py and configs/cifar10.py take as their argument, with the
# paper's figures. The paper reports Inception-ResNet-v2 only as its own schema builds it
# (irv2_paper); the released network (irv2) differs and is quoted those figures.
MODELS = {
    'iv3': Model('inception_v3', 21.2, 5.6),
    'iv4': Model('inception_v4', 20.0, 5.0),
    'irv1': Model('inception_resnet_v1', 21.3, 5.5),
    'irv2': Model('inception_resnet_v2', 19.9, 4.9),
    'irv2_paper': Model('inception_resnet_v2_paper', 19.9, 4.9),
}


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  config.model = ml_collections.ConfigDict()
  config.model.name = 'inception_resnet_v2'  # a name from inception_jax.models.list_models()
  config.model.dtype = 'float32'  # compute dtype ('bfloat16' on GPU/TPU); params stay float32
  # Unrolled blocks: on a GPU the ImageNet step runs faster and in less memory than under nn.scan,
  # whose loop slices every block's parameters and activations in and out (figures: BENCHMARKS.md).
  # Scanning compiles faster and is faster on CPUs: the demo config scans. Checkpoint layouts
  # differ; init_from converts.
  config.model.scan_blocks = False
  config.model.remat = False  # recompute block activations in the backward pass to save memory
  config.model.aux_logits = False  # TF-slim's auxiliary head, weighted by aux_loss_weight
  # Learn BatchNorm gamma (TF-slim: no; timm weights: yes), count padding in 3x3 avg pools (timm's
  # v3 weights). None: as the checkpoint of config.init_from (or the resumed workdir) records,
  # else False.
  config.model.bn_scale = config_dict.placeholder(bool)
  config.model.avg_pool_include_pad = config_dict.placeholder(bool)
  config.model.bn_momentum = 0.9997  # decay of BatchNorm's moving averages (TF-slim)
  config.model.bn_folded = False  # BatchNorm as one multiply-add per element (layers.py)
  config.model.dropout_keep = 0.8  # paper: keep probability 0.8 before the classifier
  config.model.small_inputs = False  # small-image stem (CIFAR-10 32x32)
  config.model.depth_multiplier = 1.0  # channel multiplier for scaled-down variants
  config.model.repeats = config_dict.placeholder(tuple)  # blocks per grid; None = the paper's
  config.model.residual_scale = config_dict.placeholder(object)  # Inception-ResNets; None = default
  config.model.learn_residual_scale = config_dict.placeholder(bool)  # learned, from residual_scale

  config.dataset = ml_collections.ConfigDict()
  config.dataset.name = 'imagenet2012'  # imagenet2012 | cifar10 | digits | synthetic | folder:PATH
  config.dataset.data_dir = config_dict.placeholder(str)  # TFDS data_dir (local or gs://)
  config.dataset.image_size = 299  # training and eval resolution
  config.dataset.background_class = False  # add TF-slim's class 0 (1001-way heads)
  config.dataset.color_distortion = False  # TF-slim's optional colour jitter in training
  config.dataset.min_crop_area = 0.05  # smallest training crop, as a fraction of the image area
  config.dataset.eval_split = config_dict.placeholder(str)  # None: validation (ImageNet), test, val
  # folder:PATH skips (and reports) images of more pixels than this: a decompression-bomb guard.
  config.dataset.max_image_pixels = 89_478_485

  config.batch_size = 1024  # global, over all devices and hosts
  config.eval_batch_size = 1024  # global; the last eval batch is padded and masked
  config.num_epochs = 160.0  # used when num_train_steps is unset
  config.num_train_steps = config_dict.placeholder(int)  # wins over num_epochs when set
  config.seed = 0  # parameters, dropout and data order all derive from it

  # Optimizer: RMSProp with TF semantics (Inception-v3/-v4 papers).
  config.learning_rate = 0.045  # at reference_batch_size; scaled linearly with batch_size
  config.reference_batch_size = 256  # the batch at which learning_rate applies (our choice)
  config.warmup_epochs = 0.0  # linear warm-up from 0 before the decay schedule
  config.lr_decay_rate = 0.94  # staircase decay factor ...
  config.lr_decay_epochs = 2.0  # ... applied every this many epochs
  config.rmsprop_decay = 0.9  # decay of the mean-square accumulator
  config.rmsprop_momentum = 0.9  # TF-slim's RMSProp momentum
  config.rmsprop_epsilon = 1.0  # added inside the square root; the accumulator starts at 1.0
  config.grad_clip_norm = 2.0  # clip gradients by global norm (Inception-v3 paper); 0 disables
  config.weight_decay = 4e-5  # L2 on conv and dense kernels only (TF-slim)
  config.label_smoothing = 0.1  # Inception-v3 paper
  config.aux_loss_weight = 0.4  # weight of the auxiliary head's loss when model.aux_logits is on
  config.ema_decay = 0.9999  # moving average of the parameters, used for evaluation; 0 disables

  config.log_every_steps = 100  # progress line, metrics.jsonl and TensorBoard scalars
  # Record the dying-network diagnostics (dead_fraction, residual ratios) with the training
  # metrics. None: for the Inception-ResNets only; True: any model (no residual ratios without
  # residual blocks); False: never.
  config.diagnostics = config_dict.placeholder(bool)
  config.eval_every_steps = 5000  # evaluation on the full eval split (EMA and raw parameters)
  config.checkpoint_every_steps = 2000  # async Orbax checkpoints, the last keep_checkpoints kept
  # The same three in epochs of the dataset, used where the *_every_steps field is unset (None).
  config.log_every_epochs = config_dict.placeholder(float)
  config.eval_every_epochs = config_dict.placeholder(float)
  config.checkpoint_every_epochs = config_dict.placeholder(float)
  config.keep_checkpoints = 3  # checkpoints kept (the final one is always among them)
  config.init_from = config_dict.placeholder(str)  # checkpoint dir to start from (fine-tuning)
  # Fine-tuning with frozen parts: TF-slim scope patterns, comma-separated, of the variables that
  # train ('Logits,AuxLogits': a linear probe; 'Mixed_7*,Conv2d_7b_1x1,Logits'); None: all. fnmatch
  # on the prefixes of each variable's path (Mixed_6a, Mixed_6a/Branch_1, ...; inception_jax/
  # frozen.py). The rest gets no update, weight decay nor gradient, and its BatchNorm runs in
  # inference mode on its moving statistics, kept as they are, unless frozen_bn_train.
  config.trainable_scopes = config_dict.placeholder(str)
  config.frozen_bn_train = False  # frozen BatchNorms normalise by batch statistics and update them
  config.required = ()  # fields the command line must set (configs/finetune.py: init_from)
  return config


def in_epochs(config: ml_collections.ConfigDict, log: float, evaluate: float,
              checkpoint: float) -> None:
  """Counts `config`'s log, eval and checkpoint intervals in epochs of its dataset: the
  `*_every_steps` fields become unset placeholders (still settable on the command line, where they
  win) and `*_every_epochs` take these values."""
  for event, epochs in (('log', log), ('eval', evaluate), ('checkpoint', checkpoint)):
    config[f'{event}_every_steps'] = config_dict.placeholder(int)
    config[f'{event}_every_epochs'] = epochs


def for_model(name: str) -> ml_collections.ConfigDict:
  """The ImageNet recipe for model `name`."""
  config = get_config()
  config.model.name = name
  return config


def argument(config_file: str, arg: str, valid: Iterable[str]) -> str:
  """`arg` if `config_file` takes it, i.e. it is one of `valid`; else an error naming them."""
  valid = list(valid)
  if arg not in valid:
    raise ValueError(f'{config_file} has no argument {arg!r}; its arguments are '
                     f'{", ".join(valid)}, e.g. --config={config_file}:{valid[0]}.')
  return arg


def for_argument(config_file: str, arg: str) -> ml_collections.ConfigDict:
  """The ImageNet recipe for the model named by `config_file`'s argument `arg`, a key of MODELS."""
  return for_model(MODELS[argument(config_file, arg, MODELS)].name)
