"""Classifies images with a checkpoint: the top classes with names and probabilities.

    python -m inception_jax.predict --checkpoint=/path/to/irv2_timm cat.jpg dog.png
    python -m inception_jax.predict --checkpoint=WORKDIR --model=inception_v3 photos/*.jpg

`--checkpoint` is a directory written by `python -m inception_jax.convert` or a training workdir
(its latest checkpoint, with the moving average of the parameters that evaluation reports). Their
`model.json` says which network and classes they hold; without one, pass `--model`, and a 1000- or
1001-way head is taken to be ImageNet's. Images get the evaluation preprocessing: central 87.5%
crop, bilinear resize to the model's size, scaled to [-1, 1]. An image that cannot be read is
reported on stderr and the others are still classified; the exit status is then 1.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from absl import flags
import jax
import numpy as np

from inception_jax import cli, errors, imagenet, startup, tf_import, workdir as wd
from inception_jax.errors import ConfigError
from inception_jax.models.names import LOGITS
from inception_jax.network import load_network


def label_names(classes, num_classes: int) -> list[str]:
  """What to print for each of the `num_classes` outputs, from a model record's `classes` entry
  (ImageNet's: the short name and the WordNet ID)."""
  if classes is None:
    classes = imagenet.RECORDS.get(num_classes)
  if classes in imagenet.RECORDS.values():
    names = imagenet.short_names(background=classes.endswith('background'))
    wnids = ([imagenet.BACKGROUND] if classes.endswith('background') else []) + imagenet.wnids()
    names = [n if n == w else f'{n} ({w})' for n, w in zip(names, wnids)]
  elif classes is None:
    names = [f'class {i}' for i in range(num_classes)]
  else:
    names = [str(c) for c in classes]
  if len(names) != num_classes:
    raise ConfigError(f'The checkpoint\'s record names {len(names)} classes but its classifier has '
                      f'{num_classes} outputs.')
  return names


class Predictor:
  """A network and its variables, ready to classify encoded images."""

  def __init__(self, checkpoint: str, model: Optional[str] = None, params: str = 'ema'):
    # Blocks unstacked, no aux head, the runtime options at their defaults (float32, no remat).
    self.model, variables, record = load_network(checkpoint, params, model, as_trained=False,
                                                 model_flag='--model')
    self.image_size = int((record and record.image_size) or self.model.default_size)
    num_classes = np.shape(variables['params'][LOGITS]['bias'])[0]
    self.names = label_names(record.classes if record else None, num_classes)
    self.variables = jax.device_put(variables)
    self._probabilities = jax.jit(
        lambda v, x: jax.nn.softmax(self.model.apply(v, x, train=False), axis=-1))

  def preprocess(self, encoded: bytes) -> np.ndarray:
    """Encoded JPEG/PNG/GIF/BMP bytes -> a float32 [size, size, 3] image in [-1, 1]."""
    # deferred: data/ loads TensorFlow, only when images are read
    from inception_jax.data import preprocessing
    image = preprocessing.eval_image(encoded, self.image_size).numpy()
    return image.astype(np.float32) / 127.5 - 1.0

  def top(self, images: np.ndarray, k: int = 5, batch: int = 0) -> list[list[tuple[str, float]]]:
    """The `k` most probable classes of each image, as (name, probability), most probable first.
    `batch` pads the images to that many, so that every call compiles to the same program."""
    padded = np.zeros((max(batch, len(images)), *images.shape[1:]), np.float32)
    padded[:len(images)] = images
    probabilities = np.asarray(self._probabilities(self.variables, padded))[:len(images)]
    order = np.argsort(-probabilities, axis=-1)[:, :k]
    return [[(self.names[i], float(p[i])) for i in row] for row, p in zip(order, probabilities)]


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags (the convention of `inception_jax.cli`); the images are its arguments."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string('checkpoint', None, 'Directory from inception_jax.convert, or a training '
                      'workdir.', **define)
  flags.DEFINE_string('model', None, 'Network name, when the checkpoint has no model.json.',
                      **define)
  flags.DEFINE_integer('top', 5, 'Classes to print per image.', **define)
  flags.DEFINE_integer('batch', 16, 'Images per forward pass.', **define)
  flags.mark_flags_as_required(['checkpoint'], flag_values)


def main(argv: Sequence[str], FLAGS: flags.FlagValues) -> int:
  paths = list(argv[1:])
  if not paths:
    raise ConfigError('Name the images to classify after the flags: python -m '
                      'inception_jax.predict --checkpoint=DIR IMAGE [IMAGE ...].')
  startup.start()
  wd.check(FLAGS.checkpoint, '--checkpoint')
  if not wd.isdir(FLAGS.checkpoint):
    raise ConfigError(f'--checkpoint {FLAGS.checkpoint} is not a directory.')
  tf = tf_import.tensorflow()
  predictor = Predictor(FLAGS.checkpoint, FLAGS.model)

  failed = 0
  ready: list[tuple[str, np.ndarray]] = []

  batch = max(1, min(FLAGS.batch, len(paths)))

  def flush():
    if ready:
      images = np.stack([image for _, image in ready])
      for (path, _), top in zip(ready, predictor.top(images, FLAGS.top, batch)):
        print(path)
        for rank, (name, p) in enumerate(top, 1):
          print(f'  {rank}. {100 * p:6.2f}%  {name}')
      ready.clear()

  for path in paths:
    try:
      ready.append((path, predictor.preprocess(wd.read_bytes(path))))
    except (tf.errors.OpError, OSError, ValueError) as e:
      failed += 1
      reason = errors.first_line(e, text=getattr(e, 'message', None) or str(e), default='unknown')
      print(f'error: {path}: cannot read it as an image ({type(e).__name__}: {reason})',
            file=sys.stderr)
    if len(ready) == batch:
      flush()
  flush()
  if failed:
    print(f'{failed} of {len(paths)} images could not be read.', file=sys.stderr)
  return 1 if failed else 0


if __name__ == '__main__':
  cli.run(define_flags, main)
