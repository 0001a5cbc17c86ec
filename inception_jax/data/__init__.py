"""Input pipelines: `create_source(config.dataset, ...)` returns a `Source` for training and eval."""

from inception_jax.data.base import ArraySource, Source, create_source, known_datasets

__all__ = ['ArraySource', 'Source', 'create_source', 'known_datasets']
