"""The user's own images: `folder:PATH` with PATH/train/<class>/* and PATH/val/<class>/*.

JPEG and PNG files (also GIF and BMP, first frame), in colour or greyscale, CMYK, 8 or 16 bits, or
a palette: each is decoded to 8-bit RGB. Classes are the sorted sub-directory names of PATH/train;
PATH/val may hold a subset of them. A file that cannot be used never stops the run (unreadable,
empty, corrupt, not an image, or larger than `config.dataset.max_image_pixels`): it is replaced
by a blank placeholder that is masked out of the loss and the metrics, counted, and reported (with
its path and why) at the end of each epoch and after each evaluation.
"""

from __future__ import annotations

import functools
import io
import os
import re
import threading
from typing import Mapping, Optional, Sequence
import warnings

import numpy as np
from PIL import Image

from inception_jax import tf_import
from inception_jax.data.base import register
from inception_jax.data.encoded import EncodedSource
from inception_jax.errors import ConfigError, MissingError, first_line

tf = tf_import.tensorflow()

EXTENSIONS = ('.jpg', '.jpeg', '.png', '.gif', '.bmp')


@functools.cache
def placeholder() -> bytes:
  """The image that stands in for an unreadable file (masked out of the loss)."""
  return tf.io.encode_png(tf.zeros((8, 8, 3), tf.uint8)).numpy()


def list_images(split_dir: str, classes: list[str]) -> tuple[list[str], np.ndarray]:
  paths, labels = [], []
  for label, name in enumerate(classes):
    class_dir = os.path.join(split_dir, name)
    if not os.path.isdir(class_dir):
      continue
    for file in sorted(os.listdir(class_dir)):
      if file.lower().endswith(EXTENSIONS):
        paths.append(os.path.join(class_dir, file))
        labels.append(label)
  return paths, np.asarray(labels, np.int32)


# Images of more pixels than this are skipped, not decoded: a decompression-bomb guard (a small
# file that decodes to gigabytes). Pillow's default limit; config.dataset.max_image_pixels sets it.
MAX_PIXELS = 89_478_485


def _too_large(data: bytes, max_pixels: int) -> Optional[str]:
  """Why `data` is not decoded where its header declares more than `max_pixels` pixels (read by
  Pillow, which reads the header alone), else None."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      width, height = Image.open(io.BytesIO(data)).size
  except Image.DecompressionBombError:
    return f'more than twice Pillow\'s limit of {Image.MAX_IMAGE_PIXELS:,} pixels'
  except Exception:  # pylint: disable=broad-except  (TensorFlow's decoder says what is wrong)
    return None
  if width * height <= max_pixels:
    return None
  return (f'{width}x{height} = {width * height:,} pixels, above the limit of {max_pixels:,} '
          '(config.dataset.max_image_pixels)')


def _reason(error: Exception) -> str:
  """The first line of a read or decode error, without TensorFlow's op prefix."""
  text = getattr(error, 'message', None) or getattr(error, 'strerror', None) or str(error)
  return first_line(error, text=re.sub(r'\{\{[^}]*\}\}\s*', '', text))


class FolderReader:
  """Reads image files by index, checking once per file that they decode (and are not too large
  to decode: `MAX_PIXELS`). Greyscale, CMYK, 16-bit and palette images are converted to 8-bit RGB
  by the decoder."""

  def __init__(self, paths: list[str], labels: np.ndarray, split: str,
               max_pixels: int = MAX_PIXELS):
    self.paths, self.labels, self.split = paths, labels, split
    self.max_pixels = max_pixels
    if Image.MAX_IMAGE_PIXELS is not None and max_pixels > Image.MAX_IMAGE_PIXELS:
      Image.MAX_IMAGE_PIXELS = max_pixels  # Pillow refuses to open twice its own limit
    self._valid: dict[int, bool] = {}
    self._reasons: dict[int, str] = {}
    self._skipped: set[int] = set()
    self._lock = threading.Lock()

  def _load(self, index: int) -> tuple[bytes, bool]:
    if self._valid.get(index) is False:
      return placeholder(), False
    try:
      data = tf.io.read_file(self.paths[index]).numpy()
      if index not in self._valid:
        if not data:
          raise OSError('empty file (0 bytes)')
        too_large = _too_large(data, self.max_pixels)
        if too_large:
          raise OSError(too_large)
        tf.io.decode_image(data, channels=3, expand_animations=False)
        self._valid[index] = True
      return data, True
    except (tf.errors.OpError, OSError) as e:
      self._reasons[index] = _reason(e)  # reported with the path by `report`
      self._valid[index] = False
      return placeholder(), False

  def __call__(self, indices: np.ndarray):
    loaded = [self._load(int(i)) for i in indices]
    with self._lock:
      self._skipped.update(int(i) for i, (_, ok) in zip(indices, loaded) if not ok)
    return ([data for data, _ in loaded], self.labels[np.asarray(indices, np.int64)],
            np.asarray([ok for _, ok in loaded], np.float32))

  def report(self, when: str) -> list[str]:
    """Prints (one line) and returns the files skipped since the last report."""
    with self._lock:
      skipped, self._skipped = sorted(self._skipped), set()
    paths = [self.paths[i] for i in skipped]
    if paths:
      shown = [f'{self.paths[i]} ({self._reasons.get(i, "unreadable")})' for i in skipped[:10]]
      print(f'{len(paths)} unreadable image(s) skipped in {self.split} {when}: '
            + ', '.join(shown) + (' ...' if len(paths) > 10 else ''), flush=True)
    return paths


def write_folder(root: str, splits: Mapping[str, Mapping[str, Sequence[np.ndarray]]],
                 quality: int = 95) -> str:
  """Writes images in the layout `folder:ROOT` reads: `splits` maps a split (`train`, `val`) to
  {class name: uint8 [height, width, 3] images}, written as ROOT/<split>/<class>/<index>.jpg.
  Returns ROOT, for `dataset.name=f'folder:{root}'`."""
  for split, classes in splits.items():
    for name, images in classes.items():
      directory = os.path.join(root, split, name)
      os.makedirs(directory, exist_ok=True)
      for i, image in enumerate(images):
        tf.io.write_file(os.path.join(directory, f'{i:05d}.jpg'),
                         tf.io.encode_jpeg(np.asarray(image, np.uint8), quality=quality))
  return root


@register('folder')
def create(dataset_config, *, batch_size, eval_batch_size, seed, process_index, process_count):
  root = os.path.expanduser(dataset_config.name.split(':', 1)[1])
  train_dir = os.path.join(root, 'train')
  val_dir = os.path.join(root, dataset_config.get('eval_split') or 'val')
  if not os.path.isdir(train_dir) or not os.path.isdir(val_dir):
    raise MissingError(
        f'dataset.name={dataset_config.name!r}: expected {train_dir}/<class>/*.jpg and '
        f'{val_dir}/<class>/*.jpg (JPEG or PNG), one sub-directory per class.')
  classes = sorted(d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d)))
  unknown = sorted(set(d for d in os.listdir(val_dir) if os.path.isdir(os.path.join(val_dir, d)))
                   - set(classes))
  if unknown:
    raise ConfigError(f'{val_dir} has classes that {train_dir} lacks: {", ".join(unknown)}.')
  max_pixels = dataset_config.get('max_image_pixels') or MAX_PIXELS
  train = FolderReader(*list_images(train_dir, classes), 'train', max_pixels)
  evaluation = FolderReader(*list_images(val_dir, classes), 'val', max_pixels)
  for reader, where in ((train, train_dir), (evaluation, val_dir)):
    if not reader.paths:
      raise MissingError(f'No images ({", ".join(EXTENSIONS)}) under {where}/<class>/.')
  source = EncodedSource(
      name=dataset_config.name, read_train=train, read_eval=evaluation,
      train_size=len(train.paths),
      eval_size=len(evaluation.paths), num_classes=len(classes),
      image_size=dataset_config.image_size, global_batch_size=batch_size,
      eval_batch_size=eval_batch_size, seed=seed, process_index=process_index,
      process_count=process_count, color_distortion=dataset_config.color_distortion,
      min_crop_area=dataset_config.min_crop_area)
  source.classes = classes
  return source
