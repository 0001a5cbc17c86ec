"""Input pipelines: `create_source(config.dataset, ...)` returns a `Source` for training and
eval."""

# Importing the source modules registers their dataset names.
from inception_jax.data import digits, folder, synthetic, tfds_sources  # noqa: F401,E402
from inception_jax.data.base import ArraySource, Source, create_source, known_datasets

__all__ = ['ArraySource', 'Source', 'create_source', 'known_datasets']
