"""Pretrained weights from other implementations, as Flax variables for `inception_jax.models`.

Three readers, each returning `{'params', 'batch_stats'}` for `create(model_name, **options)`, with
the options it needs given by `options_from_variables(variables, source)`:

- `from_keras(model_or_path, model_name)`: Keras' `InceptionResNetV2` and `InceptionV3`. Keras
  names its convolutions only by a creation counter (`conv2d_17`), so layers are matched in creation
  order, which is also the order our networks call their layers.
- `from_timm(state_dict_or_path, model_name)`: timm's `inception_v4`, `inception_resnet_v2` and
  `inception_v3` (a mapping of names to arrays, a `.safetensors` file or a `.pth` file). timm's
  module names are translated to our blocks; inside a block, units are matched in order.
  `pretrained_file(model_name, directory)` downloads timm's file from the Hugging Face Hub, or
  writes one of `random_state_dict(model_name)`, timm's exact layout with random values, where it
  cannot (tests, offline machines).
- `from_slim(checkpoint, model_name, background='drop')`: TF-slim's TF1 checkpoints, whose variable
  names are our paths under the network's scope; the 1001st (background) class is dropped or kept.

Every tensor is checked by shape; a mismatch names the tensor and both shapes, and unused or
missing tensors are an error: nothing is silently ignored except what is not a weight (BatchNorm's
`num_batches_tracked` counters, TF's `global_step` and optimizer slots). A `ConversionError` names a
few tensors and their count (`names` holds them all) and, for weights of another of the source's
models, that model (`fits`); a file that another source reads is a `FileFormatError` naming it.

One module per source (`keras`, `timm`, `slim`); `layout` holds what they share: our network's
variables and layer order, filled shape-checked, and the errors; `files` tells file formats apart.
"""

from inception_jax.weights.files import file_format
from inception_jax.weights.keras import KERAS_APPLICATIONS, from_keras
from inception_jax.weights.layout import ConversionError, FileFormatError, options_from_variables
from inception_jax.weights.slim import (
    SLIM_HEADS,
    SLIM_LEAVES,
    SLIM_NOT_WEIGHTS,
    SLIM_SCOPES,
    from_slim,
    slim_name,
)
from inception_jax.weights.timm import (
    TIMM_BLOCKS,
    TIMM_HEADS,
    TIMM_HUB,
    TIMM_MODELS,
    WeightsFile,
    from_timm,
    pretrained_file,
    random_state_dict,
    read_state_dict,
    timm_layout,
)

__all__ = [
    'ConversionError', 'FileFormatError', 'KERAS_APPLICATIONS', 'SLIM_HEADS', 'SLIM_LEAVES',
    'SLIM_NOT_WEIGHTS', 'SLIM_SCOPES', 'TIMM_BLOCKS', 'TIMM_HEADS', 'TIMM_HUB', 'TIMM_MODELS',
    'WeightsFile', 'file_format', 'from_keras', 'from_slim', 'from_timm', 'options_from_variables',
    'pretrained_file', 'random_state_dict', 'read_state_dict', 'slim_name', 'timm_layout',
]
