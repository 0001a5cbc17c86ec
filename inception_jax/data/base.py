"""What every data source provides, and an in-memory source (used by the embedded demo data).

A source yields per-process batches of uint8 images `[local_batch, H, W, C]` and int32 labels. The
training stream is a pure function of (seed, step): a run resumed at step N gets exactly the batches
an uninterrupted run gets from step N on, and no example is skipped or seen twice.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Callable, Iterator

import numpy as np

from inception_jax.errors import ConfigError

Batch = dict[str, np.ndarray]


@dataclasses.dataclass(kw_only=True)
class Source(abc.ABC):
  """A dataset split into a training stream and an exact evaluation pass.

  Subclasses set `name`, `num_classes`, `image_shape`, `train_size` and `eval_size`.
  """
  global_batch_size: int
  eval_batch_size: int
  seed: int = 0
  process_index: int = 0
  process_count: int = 1

  name: str = dataclasses.field(init=False, default='')
  num_classes: int = dataclasses.field(init=False, default=0)
  image_shape: tuple[int, int, int] = dataclasses.field(init=False, default=(0, 0, 0))
  train_size: int = dataclasses.field(init=False, default=0)
  eval_size: int = dataclasses.field(init=False, default=0)
  # Names of the classes by label, 'imagenet' / 'imagenet+background' (see inception_jax.imagenet),
  # or None when unknown; recorded with checkpoints for `inception_jax.predict`.
  classes: Any = dataclasses.field(init=False, default=None)
  # Whether training batches carry a `mask` (sources that can fail to read an example); eval
  # batches always do.
  train_mask: bool = dataclasses.field(init=False, default=False)

  @abc.abstractmethod
  def train_batches(self, start_step: int) -> Iterator[Batch]:
    """This process's slice of global training batches `start_step`, `start_step + 1`, ..."""

  @abc.abstractmethod
  def eval_batches(self) -> Iterator[Batch]:
    """This process's slice of the eval split, every example once; padding has `mask` 0."""

  def batch_spec(self, train: bool) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The (shape, dtype) of each array of a global training or eval batch, as the job receives
    it (all processes' slices together): what compiling the job ahead of time needs."""
    batch = self.global_batch_size if train else self.eval_batch_size
    spec = {'image': ((batch, *self.image_shape), np.dtype(np.uint8)),
            'label': ((batch,), np.dtype(np.int32))}
    if self.train_mask or not train:
      spec['mask'] = ((batch,), np.dtype(np.float32))
    return spec

  @property
  def steps_per_epoch(self) -> int:
    return self.train_size // self.global_batch_size  # an epoch's partial last batch is dropped

  def check_batch_size(self) -> None:
    if self.global_batch_size > self.train_size:
      raise ConfigError(f'batch_size={self.global_batch_size} exceeds the {self.train_size} '
                        f'training examples of {self.name}; lower config.batch_size.')

  def fit_eval_batch(self, multiple: int) -> None:
    """Lowers the eval batch to the eval split's size rounded up to `multiple` (the devices)
    where the split is the smaller: padding 19 images to a batch of 1,024 is wasted work."""
    self.eval_batch_size = min(self.eval_batch_size, -(-self.eval_size // multiple) * multiple)

  def local_slice(self, batch: int) -> slice:
    """This process's columns of a global batch of `batch` examples."""
    local = batch // self.process_count
    return slice(self.process_index * local, (self.process_index + 1) * local)

  def epoch_order(self, epoch: int) -> np.ndarray:
    """The order of the training examples in `epoch`: a permutation drawn from (seed, epoch)."""
    return np.random.default_rng([self.seed, epoch]).permutation(self.train_size)

  def position(self, step: int) -> dict[str, Any]:
    """Where the training stream stands after `step` batches (saved with each checkpoint)."""
    epoch, index = divmod(step, self.steps_per_epoch)
    return {'dataset': self.name, 'step': step, 'epoch': epoch, 'batch_in_epoch': index,
            'examples_seen': step * self.global_batch_size}


@dataclasses.dataclass(kw_only=True)
class ArraySource(Source):
  """Arrays held in memory, shuffled per epoch from the seed; global batches split over
  processes."""
  name: str
  train_images: np.ndarray
  train_labels: np.ndarray
  eval_images: np.ndarray
  eval_labels: np.ndarray
  num_classes: int

  def __post_init__(self):
    self.image_shape = tuple(self.train_images.shape[1:])
    self.train_size = len(self.train_images)
    self.eval_size = len(self.eval_images)
    self.check_batch_size()

  def train_batches(self, start_step: int) -> Iterator[Batch]:
    step = start_step
    while True:
      epoch, index = divmod(step, self.steps_per_epoch)
      order = self.epoch_order(epoch)
      for i in range(index, self.steps_per_epoch):
        rows = order[i * self.global_batch_size:(i + 1) * self.global_batch_size]
        rows = rows[self.local_slice(self.global_batch_size)]
        yield {'image': self.train_images[rows], 'label': self.train_labels[rows]}
        step += 1

  def eval_batches(self) -> Iterator[Batch]:
    batch = self.eval_batch_size
    for start in range(0, self.eval_size, batch):
      rows = np.arange(start, start + batch)[self.local_slice(batch)]
      mask = rows < self.eval_size
      rows = np.where(mask, rows, 0)
      yield {'image': self.eval_images[rows], 'label': self.eval_labels[rows],
             'mask': mask.astype(np.float32)}


def check_no_eval_split(dataset_config) -> None:
  """For sources with one fixed eval split: an error when another is asked for."""
  if dataset_config.get('eval_split'):
    raise ConfigError(f'{dataset_config.name} has one eval split; unset dataset.eval_split '
                      f'(--split), which is {dataset_config.eval_split!r}.')


Factory = Callable[..., Source]
_FACTORIES: dict[str, Factory] = {}


def register(name: str):
  def wrap(factory: Factory) -> Factory:
    _FACTORIES[name] = factory
    return factory
  return wrap


def known_datasets() -> list[str]:
  return sorted(_FACTORIES)


def create_source(dataset_config, *, batch_size: int, eval_batch_size: int, seed: int,
                  process_index: int = 0, process_count: int = 1) -> Source:
  """The source named by `dataset_config.name` (fails fast, naming the fix, when it can't be
  read)."""

  name = dataset_config.name
  kind = name.split(':', 1)[0]
  if kind not in _FACTORIES:
    raise ConfigError(f'Unknown dataset {name!r}: config.dataset.name must be one of '
                      f'{", ".join(known_datasets())}.')
  return _FACTORIES[kind](dataset_config, batch_size=batch_size, eval_batch_size=eval_batch_size,
                          seed=seed, process_index=process_index, process_count=process_count)
