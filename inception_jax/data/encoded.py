"""A tf.data pipeline over any random-access store of encoded images (TFDS data sources, folders).

The training stream is index-based: each epoch is a permutation of the example indices drawn from
(seed, epoch); global batch k of the epoch is rows [k*B, (k+1)*B) of that permutation, and each
process reads and decodes only its own slice of it. A resumed run starts from any step without
reading what came before, and the random crop/flip of an example is seeded by its position in the
stream, so the pixels are the same as in an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterator

import numpy as np

from inception_jax import tf_import
from inception_jax.data import preprocessing
from inception_jax.data.base import Batch, Source

tf = tf_import.tensorflow()

# Reads the examples at `indices` -> (encoded images [n] as bytes objects, int labels [n],
# valid [n]).
# An example that cannot be read comes back with valid 0 and any decodable placeholder image: it is
# masked out of the loss and the metrics, and the batch keeps its shape.
Reader = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclasses.dataclass(kw_only=True)
class EncodedSource(Source):
  name: str
  read_train: Reader
  read_eval: Reader
  train_size: int
  eval_size: int
  num_classes: int
  image_size: int
  color_distortion: bool = False
  min_crop_area: float = preprocessing.AREA_RANGE[0]
  label_offset: int = 0  # 1 adds TF-slim's background class 0

  def __post_init__(self):
    self.image_shape = (self.image_size, self.image_size, 3)
    self.train_mask = True
    self.check_batch_size()

  def _read(self, reader: Reader):
    def read(indices):
      encoded, labels, valid = reader(indices)
      return (np.asarray(encoded, dtype=object), np.asarray(labels, np.int32) + self.label_offset,
              np.asarray(valid, np.float32))
    return lambda idx: tf.numpy_function(read, [idx], [tf.string, tf.int32, tf.float32],
                                         stateful=False)

  def epoch_dataset(self, epoch: int, first_batch: int) -> tf.data.Dataset:
    """This process's batches first_batch, first_batch + 1, ... of `epoch`."""
    b, spe = self.global_batch_size, self.steps_per_epoch
    columns = self.local_slice(b)
    rows = self.epoch_order(epoch)[:spe * b].reshape(spe, b)[first_batch:, columns]
    # The seed of an example's augmentation: its position in the whole stream.
    positions = (epoch * spe * b + np.arange(first_batch, spe)[:, None] * b
                 + np.arange(b)[columns][None, :])
    read = self._read(self.read_train)
    size, color, seed, area = self.image_size, self.color_distortion, self.seed, self.min_crop_area

    def decode(encoded, label, valid, position):
      example_seed = tf.stack([tf.constant(seed, tf.int64), position])
      return preprocessing.train_image(encoded, example_seed, size, color, area), label, valid

    ds = tf.data.Dataset.from_tensor_slices((rows, positions))
    # The next batch is read while this one is decoded (prefetch): from a bucket, its I/O waits
    # on the network, not on the decoding.
    ds = ds.map(lambda idx, pos: (*read(idx), pos)).prefetch(1).unbatch()
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return ds.batch(b // self.process_count, drop_remainder=True).prefetch(tf.data.AUTOTUNE)

  def train_batches(self, start_step: int) -> Iterator[Batch]:
    epoch, first = divmod(start_step, self.steps_per_epoch)
    while True:
      for images, labels, mask in self.epoch_dataset(epoch, first).as_numpy_iterator():
        yield {'image': images, 'label': labels, 'mask': mask}
      report_skipped(self.read_train, f'epoch {epoch}')
      epoch, first = epoch + 1, 0

  def eval_examples(self) -> tf.data.Dataset:
    """This process's slice of the eval split, padded to whole batches of `eval_batch_size`, one
    example at a time: (encoded image, label, valid); padding and unreadable files have valid 0.
    Unreadable files are reported by `report_skipped(source.read_eval, ...)` once read."""
    b = self.eval_batch_size
    padded = -(-self.eval_size // b) * b
    rows = np.arange(padded).reshape(-1, b)[:, self.local_slice(b)]
    mask = (rows < self.eval_size).astype(np.float32)
    read = self._read(self.read_eval)
    ds = tf.data.Dataset.from_tensor_slices((np.where(mask > 0, rows, 0), mask))
    return ds.map(lambda idx, m: (*read(idx), m)).prefetch(1).unbatch().map(
        lambda encoded, label, valid, m: (encoded, label, valid * m))

  def eval_batches(self) -> Iterator[Batch]:
    size = self.image_size
    ds = self.eval_examples().map(
        lambda encoded, label, valid: (preprocessing.eval_image(encoded, size), label, valid),
        num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.batch(self.eval_batch_size // self.process_count).prefetch(tf.data.AUTOTUNE)
    for images, labels, m in ds.as_numpy_iterator():
      yield {'image': images, 'label': labels, 'mask': m}
    report_skipped(self.read_eval, 'evaluation')


def report_skipped(reader: Reader, when: str) -> None:
  """Lets a reader that skips unreadable files say which ones (see `folder.FolderReader`)."""
  report = getattr(reader, 'report', None)
  if report is not None:
    report(when)
