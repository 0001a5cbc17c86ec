"""Random uint8 images at the model's size, for benchmarks: no files, no decoding.

Labels are drawn from ImageNet's 1,000 classes; with `dataset.background_class` the head has 1,001
and the labels are shifted to 1-1000, as the TFDS ImageNet source shifts them (TF-slim's class 0).
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from inception_jax.data.base import Batch, Source, check_no_eval_split, register
from inception_jax.data.datasets import DATASETS

IMAGENET_TRAIN_SIZE = DATASETS['imagenet2012'].sizes[0]
IMAGENET_CLASSES = 1000


@dataclasses.dataclass(kw_only=True)
class SyntheticSource(Source):
  image_size: int
  label_offset: int = 0  # 1 with the background class 0, which no image has
  name: str = 'synthetic'
  train_size: int = IMAGENET_TRAIN_SIZE

  def __post_init__(self):
    self.image_shape = (self.image_size, self.image_size, 3)
    self.eval_size = self.eval_batch_size
    self.num_classes = IMAGENET_CLASSES + self.label_offset

  def _batch(self, key, size: int) -> Batch:
    rng = np.random.default_rng([self.seed, self.process_index, *key])
    local = size // self.process_count
    return {'image': rng.integers(0, 256, (local, *self.image_shape), dtype=np.uint8),
            'label': rng.integers(self.label_offset, self.num_classes, (local,), dtype=np.int32)}

  def train_batches(self, start_step: int) -> Iterator[Batch]:
    step = start_step
    while True:
      yield self._batch((0, step), self.global_batch_size)
      step += 1

  def eval_batches(self) -> Iterator[Batch]:
    batch = self._batch((1, 0), self.eval_batch_size)
    yield {**batch, 'mask': np.ones(len(batch['label']), np.float32)}


@register('synthetic')
def create(dataset_config, *, batch_size, eval_batch_size, seed, process_index, process_count):
  check_no_eval_split(dataset_config)
  return SyntheticSource(image_size=dataset_config.image_size,
                         label_offset=1 if dataset_config.background_class else 0,
                         global_batch_size=batch_size, eval_batch_size=eval_batch_size, seed=seed,
                         process_index=process_index, process_count=process_count)
