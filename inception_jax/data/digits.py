"""The embedded demo data: scikit-learn's bundled handwritten digits, no download.

1,797 grey 8x8 images of the digits 0-9, split deterministically into 1,500 training and 297 eval
images, scaled to uint8, resized (bilinear) to `dataset.image_size` and repeated to 3 channels so
that the networks see the same kind of input as ImageNet.
"""

from __future__ import annotations

import jax
import numpy as np

from inception_jax.data.base import ArraySource, check_no_eval_split, register

EVAL_SIZE = 297


def load(image_size: int) -> tuple[np.ndarray, np.ndarray]:
  # deferred: scikit-learn takes a second to load, only for its data
  from sklearn.datasets import load_digits

  digits = load_digits()
  images = digits.images.astype(np.float32) * (255.0 / 16.0)
  images = np.asarray(jax.image.resize(images, (len(images), image_size, image_size), 'bilinear'))
  images = np.clip(np.round(images), 0, 255).astype(np.uint8)
  return np.repeat(images[..., None], 3, axis=-1), digits.target.astype(np.int32)


@register('digits')
def create(dataset_config, *, batch_size, eval_batch_size, seed, process_index, process_count):
  check_no_eval_split(dataset_config)
  images, labels = load(dataset_config.image_size)
  order = np.random.default_rng(0).permutation(len(images))  # fixed split, whatever the seed
  eval_rows, train_rows = order[:EVAL_SIZE], order[EVAL_SIZE:]
  source = ArraySource(name='digits', train_images=images[train_rows],
                       train_labels=labels[train_rows], eval_images=images[eval_rows],
                       eval_labels=labels[eval_rows], num_classes=10, global_batch_size=batch_size,
                       eval_batch_size=eval_batch_size, seed=seed, process_index=process_index,
                       process_count=process_count)
  source.classes = [str(digit) for digit in range(10)]
  return source
