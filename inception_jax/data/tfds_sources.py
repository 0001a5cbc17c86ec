"""ImageNet and CIFAR-10 from TFDS, read by index through `tfds.data_source` (ArrayRecord files).

Random access is what makes the stream exactly resumable and globally shuffled, so the datasets must
be prepared in TFDS's `array_record` format, by `python -m inception_jax.prepare`. The job never
downloads nor prepares: data that is not there is an error giving that command, before any compute,
and data that is there but cannot be read is an error naming the cause (a missing package, a
permission, a damaged file).
"""

from __future__ import annotations

import numpy as np

from inception_jax import imagenet, workdir as wd
from inception_jax.data import datasets
from inception_jax.data.base import register
from inception_jax.data.encoded import EncodedSource
from inception_jax.errors import MissingError

CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                   'truck']
CLASSES = {'imagenet2012': 'imagenet', 'cifar10': CIFAR10_CLASSES}


def _reader(source):
  """Reads a batch's records in one call, in the order of `indices`: TFDS's ArrayRecord source
  (`__getitems__`) fetches each file's records on a thread of its own, and a file's records
  together on ArrayRecord's C++ thread pool. From a bucket, where each request waits tens of
  milliseconds, a batch then waits a few round trips rather than one a record (64 records of 8
  files, 30 ms a request: 0.2 s, not 3; benchmarks/input_pipeline.py --emulate)."""
  def read(indices: np.ndarray):
    records = source.__getitems__([int(i) for i in indices])
    return [r['image'] for r in records], [r['label'] for r in records], np.ones(len(records))
  return read


def _unreadable(name: str, data_dir: str | None, error: Exception) -> Exception:
  """What stopped `name` from being read: the cause and its fix. The data not being prepared is
  claimed only when TFDS finds no prepared copy."""
  if isinstance(error, ImportError):
    return datasets.missing_module(name, error)
  # deferred: TFDS loads seconds of modules, only for a TFDS dataset
  import tensorflow_datasets as tfds
  try:
    with datasets.quiet_tfds():
      builder = tfds.builder(name, data_dir=data_dir)
      prepared = builder.is_prepared()
      why_not = prepared and datasets.problem(builder, name)
  except ImportError as e:
    return datasets.missing_module(name, e)
  except Exception as e:  # pylint: disable=broad-except
    error = e  # e.g. an unreadable directory or dataset_info.json: reported below
    builder, prepared, why_not = None, True, None
  if builder:
    root, where = builder.data_dir_root, builder.data_dir
  else:
    # deferred: TFDS, only for a TFDS dataset
    from tensorflow_datasets.core import constants
    root = data_dir or constants.DATA_DIR
    where = wd.join(root, name)
  if not prepared:
    unset = ' (TFDS\'s default: config.dataset.data_dir is unset)' if data_dir is None else ''
    return MissingError(
        f'{name} is not prepared in {root}{unset}, and the job does not download data. Prepare '
        f'it once with: {datasets.command(name, root)}'
        + (f' (MANUAL_DIR holding {datasets.manual_hint(name)})'
           if datasets.DATASETS[name].manual_required else ''))
  if why_not:
    return MissingError(why_not)
  if isinstance(error, PermissionError):
    return MissingError(f'{name} in {where} cannot be read: {error}. Give this user read access '
                        'to it.')
  return MissingError(f'{name} in {where} cannot be read ({type(error).__name__}: {error}): a '
                      f'file is damaged or missing. Delete {where} and prepare it again: '
                      f'{datasets.command(name, root)}')


def _data_source(name: str, split: str, data_dir: str | None):
  """The split's records by index. Its first and last records are read here: a damaged or
  missing file fails now rather than mid-training."""
  try:
    # deferred: TFDS loads seconds of modules, only for a TFDS dataset
    import tensorflow_datasets as tfds
    with datasets.quiet_tfds():
      source = tfds.data_source(name, split=split, data_dir=data_dir, download=False,
                                builder_kwargs={'file_format': datasets.ARRAY_RECORD},
                                decoders={'image': tfds.decode.SkipDecoding()})
    if len(source):
      _ = source[0], source[len(source) - 1]
    return source
  except Exception as e:  # pylint: disable=broad-except
    raise _unreadable(name, data_dir, e) from e


def create(dataset_config, *, batch_size, eval_batch_size, seed, process_index, process_count,
           read: bool = True):
  """The dataset's source; with `read=False` a stand-in with its shapes and published sizes that
  opens no file (for `inception_jax.aot`, which compiles the job where the data is not)."""
  name = dataset_config.name
  train_split, eval_split = datasets.DATASETS[name].splits
  eval_split = dataset_config.get('eval_split') or eval_split
  data_dir = dataset_config.data_dir or None  # '' from the command line: TFDS's default
  if read:
    train = _data_source(name, train_split, data_dir)
    evaluation = _data_source(name, eval_split, data_dir)
    sizes = len(train), len(evaluation)
    readers = _reader(train), _reader(evaluation)
  else:
    sizes, readers = datasets.DATASETS[name].sizes, (_not_read, _not_read)
  offset = 1 if dataset_config.background_class else 0
  classes = CLASSES[name]
  if classes == 'imagenet':
    num_classes = 1000 + offset
    recorded = imagenet.RECORDS[num_classes]
  else:
    num_classes, recorded = len(classes) + offset, ['background'] * offset + classes
  source = EncodedSource(
      name=name, read_train=readers[0], read_eval=readers[1], train_size=sizes[0],
      eval_size=sizes[1], num_classes=num_classes,
      image_size=dataset_config.image_size, global_batch_size=batch_size,
      eval_batch_size=eval_batch_size, seed=seed, process_index=process_index,
      process_count=process_count,
      color_distortion=dataset_config.color_distortion,
      min_crop_area=dataset_config.min_crop_area, label_offset=offset)
  source.classes = recorded
  return source


def _not_read(indices: np.ndarray):
  raise RuntimeError('This source was made with read=False: it has shapes, not examples.')


for _name in datasets.DATASETS:
  register(_name)(create)
