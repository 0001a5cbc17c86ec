"""The datasets that `python -m inception_jax.prepare` prepares and the TFDS sources read: what
each one is (its splits, its sizes, the files it is prepared from), the command that prepares it,
and the TFDS helpers that both sides need (a missing module's message, TFDS's expected warnings
silenced, why a prepared copy is not what the job reads)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Iterator

from inception_jax.errors import UserError

IMAGENET_SITE = 'https://image-net.org/download-images'
IMAGENET_TRAIN, IMAGENET_VAL = 'ILSVRC2012_img_train.tar', 'ILSVRC2012_img_val.tar'
IMAGENET_TEST = 'ILSVRC2012_img_test.tar'  # unlabelled; TFDS prepares it too when it is there
CIFAR10_URL = 'https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz'
CIFAR10_FILE = 'cifar-10-binary.tar.gz'
ARRAY_RECORD = 'array_record'


@dataclasses.dataclass(frozen=True)
class Dataset:
  splits: tuple[str, str]  # (train, eval), the splits the job reads
  manual_files: tuple[str, ...]  # what --manual_dir holds
  manual_required: bool
  config: str  # a config that trains on it
  sizes: tuple[int, int]  # examples in the (train, eval) splits
  url: str | None = None  # what TFDS downloads when --manual_dir is not given


DATASETS = {
    'imagenet2012': Dataset(('train', 'validation'), (IMAGENET_TRAIN, IMAGENET_VAL), True,
                            'configs/imagenet.py:irv2', (1_281_167, 50_000)),
    'cifar10': Dataset(('train', 'test'), (CIFAR10_FILE,), False, 'configs/cifar10.py:irv2',
                       (50_000, 10_000), CIFAR10_URL),
}


class ModuleMissing(UserError, ImportError):
  """A Python package that TFDS needs for the dataset is not installed."""


def command(name: str, data_dir: str) -> str:
  """The command line that prepares `name` in `data_dir`."""
  manual = ' --manual_dir=MANUAL_DIR' if DATASETS[name].manual_required else ''
  return f'python -m inception_jax.prepare {name} --data_dir={data_dir}{manual}'


def manual_hint(name: str) -> str:
  """What --manual_dir must hold, and where it comes from."""
  if name == 'imagenet2012':
    return (f'{IMAGENET_TRAIN} (138 GiB) and {IMAGENET_VAL} (6.3 GiB), the ILSVRC2012 archives '
            f'that image-net.org gives registered users ({IMAGENET_SITE}), as downloaded (not '
            'extracted)')
  return (f'{CIFAR10_FILE} (170 MB) as downloaded from {CIFAR10_URL} (the binary version, not '
          'extracted)')


def missing_module(name: str, error: ImportError) -> ModuleMissing:
  module = error.name or 'a module'
  return ModuleMissing(
      f'{name}: TFDS needs the Python module {module}, which cannot be imported ({error}). '
      f'Install it (pip install {module}), or reinstall inception_jax (pip install -e . in the '
      'repository), which requires what TFDS needs.')


class _DropExpected(logging.Filter):
  """TFDS warnings that say nothing useful here: checking an unprepared directory warns that it
  has no dataset_info.json, and ImageNet's builder warns that the unlabelled test archive (which
  nobody here needs) is absent."""

  def filter(self, record: logging.LogRecord) -> bool:
    message = str(record.msg)
    return not (message.startswith('Variant folder %s has no ')
                or (message.startswith('ImageNet 2012 Challenge %s split not found')
                    and str(record.args[0]) == 'test'))


@contextlib.contextmanager
def quiet_tfds() -> Iterator[None]:
  """Without `_DropExpected`'s warnings inside."""
  logger = logging.getLogger('absl')
  dropper = _DropExpected()
  logger.addFilter(dropper)
  try:
    yield
  finally:
    logger.removeFilter(dropper)


def problem(builder, name: str) -> str | None:
  """Why `builder`'s prepared data is not what the job reads (None when it is)."""
  path = builder.data_dir
  formats = sorted(f.value for f in builder.info.available_file_formats())
  if ARRAY_RECORD not in formats:
    return (f'{path} holds {name} in {", ".join(formats) or "no known"} format (`tfds build` '
            'without --file_format=array_record writes tfrecord), but the job reads array_record '
            f'files by index. Delete {path} and run: {command(name, builder.data_dir_root)} (or '
            'prepare it in another data_dir).')
  missing = [s for s in DATASETS[name].splits if s not in builder.info.splits]
  if missing:
    return (f'{path} holds {name} without its {" and ".join(missing)} split (prepared from an '
            f'incomplete --manual_dir?). Delete {path}, then run: '
            f'{command(name, builder.data_dir_root)}')
  return None
