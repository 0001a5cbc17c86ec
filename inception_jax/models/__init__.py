"""The Inception model zoo in Flax Linen: `create(name, **options)` and `list_models()`."""

from inception_jax.models.base import InceptionNetwork
from inception_jax.models.inception_resnet import (
    InceptionResNetV1,
    InceptionResNetV2,
    InceptionResNetV2Paper,
)
from inception_jax.models.inception_v3 import InceptionV3
from inception_jax.models.inception_v4 import InceptionV4
from inception_jax.models.registry import create, list_models, model_class, options
from inception_jax.models.scan import stack_blocks, unstack_blocks

__all__ = [
    'InceptionNetwork', 'InceptionResNetV1', 'InceptionResNetV2', 'InceptionResNetV2Paper',
    'InceptionV3', 'InceptionV4', 'create', 'list_models', 'model_class', 'options',
    'stack_blocks', 'unstack_blocks',
]
