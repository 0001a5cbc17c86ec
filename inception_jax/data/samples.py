"""Example images that ship with the package's dependencies, for notebooks, tests and demos.

- `photographs()`: scikit-learn's two sample photographs (`china.jpg`, a temple, and
  `flower.jpg`, 427x640 each), as uint8 arrays; `write_photographs(directory)` as JPEG files.
- `photograph_folder(root)`: a small two-class image folder (`folder:ROOT`) cut from them, to
  fine-tune on: random crops, the training ones from the left three fifths of each photograph and
  the validation ones from the right two fifths, so that no pixel is in both splits.
"""

from __future__ import annotations

import os

import numpy as np

from inception_jax import tf_import
from inception_jax.data import folder

PHOTOGRAPHS = ('china', 'flower')
TRAIN_PART = 0.6  # the left part of each photograph that training crops come from


def photographs() -> dict[str, np.ndarray]:
  """{'china': uint8 [427, 640, 3], 'flower': ...}: scikit-learn's bundled sample images."""
  # deferred: scikit-learn takes a second to load, only for its data
  from sklearn.datasets import load_sample_image
  return {name: np.asarray(load_sample_image(f'{name}.jpg'), np.uint8) for name in PHOTOGRAPHS}


def write_photographs(directory: str) -> list[str]:
  """The photographs as DIRECTORY/china.jpg and DIRECTORY/flower.jpg; returns the paths."""
  tf = tf_import.tensorflow()
  os.makedirs(directory, exist_ok=True)
  paths = []
  for name, image in photographs().items():
    paths.append(os.path.join(directory, f'{name}.jpg'))
    tf.io.write_file(paths[-1], tf.io.encode_jpeg(image, quality=95))
  return paths


def random_crops(image: np.ndarray, count: int, rng: np.random.Generator,
                 side: tuple[float, float] = (0.3, 0.6)) -> list[np.ndarray]:
  """`count` square crops of `image`, each side a random fraction `side` of the image's shorter
  side, at a random place, mirrored half of the time."""
  height, width = image.shape[:2]
  crops = []
  for _ in range(count):
    size = int(rng.uniform(*side) * min(height, width))
    size = max(1, min(size, height, width))
    top, left = rng.integers(0, height - size + 1), rng.integers(0, width - size + 1)
    crop = image[top:top + size, left:left + size]
    crops.append(crop[:, ::-1] if rng.random() < 0.5 else crop)
  return crops


def photograph_folder(root: str, train_per_class: int = 24, val_per_class: int = 8,
                      seed: int = 0) -> str:
  """Writes `folder:ROOT` with the classes `china` and `flower`: `train_per_class` crops of each
  photograph's left part for training, `val_per_class` of its right part for validation. Returns
  ROOT."""
  rng = np.random.default_rng(seed)
  splits: dict[str, dict[str, list[np.ndarray]]] = {'train': {}, 'val': {}}
  for name, image in photographs().items():
    cut = int(TRAIN_PART * image.shape[1])
    splits['train'][name] = random_crops(image[:, :cut], train_per_class, rng)
    splits['val'][name] = random_crops(image[:, cut:], val_per_class, rng)
  return folder.write_folder(root, splits)
