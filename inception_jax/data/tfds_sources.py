"""ImageNet and CIFAR-10 from TFDS, read by index through `tfds.data_source` (ArrayRecord files).

Random access is what makes the stream exactly resumable and globally shuffled, so the datasets must
be prepared in TFDS's `array_record` format; the error for missing data gives the command.
"""

from __future__ import annotations

import numpy as np

from inception_jax import imagenet
from inception_jax.data.base import register
from inception_jax.data.encoded import EncodedSource

CIFAR10_CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
                   'truck']
SPECS = {
    # name: (train split, eval split, class names, how to prepare it)
    'imagenet2012': ('train', 'validation', 'imagenet',
                     'download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar into '
                     'MANUAL_DIR, then run: tfds build imagenet2012 --manual_dir=MANUAL_DIR '
                     '--data_dir={data_dir} '
                     '--file_format=array_record'),
    'cifar10': ('train', 'test', CIFAR10_CLASSES,
                'run (downloads 163 MB): tfds build cifar10 --data_dir={data_dir} '
                '--file_format=array_record'),
}


def _reader(source):
  def read(indices: np.ndarray):
    records = [source[int(i)] for i in indices]
    return [r['image'] for r in records], [r['label'] for r in records], np.ones(len(records))
  return read


def _data_source(name: str, split: str, data_dir):
  import tensorflow_datasets as tfds

  try:
    return tfds.data_source(name, split=split, data_dir=data_dir,
                            decoders={'image': tfds.decode.SkipDecoding()})
  except Exception as e:  # pylint: disable=broad-except
    where = data_dir or '~/tensorflow_datasets (TFDS default)'
    raise FileNotFoundError(
        f'{name} ({split}) is not prepared in {where} in array_record format ({type(e).__name__}: '
        f'{e}). To prepare it, ' + SPECS[name][3].format(data_dir=data_dir or 'DATA_DIR') +
        ', and set config.dataset.data_dir.') from e


def create(dataset_config, *, batch_size, eval_batch_size, seed, process_index, process_count):
  name = dataset_config.name
  train_split, eval_split, classes, _ = SPECS[name]
  train = _data_source(name, train_split, dataset_config.data_dir)
  evaluation = _data_source(name, eval_split, dataset_config.data_dir)
  offset = 1 if dataset_config.background_class else 0
  if classes == 'imagenet':
    num_classes = 1000 + offset
    recorded = imagenet.RECORDS[num_classes]
  else:
    num_classes, recorded = len(classes) + offset, ['background'] * offset + classes
  source = EncodedSource(
      name=name, read_train=_reader(train), read_eval=_reader(evaluation), train_size=len(train),
      eval_size=len(evaluation), num_classes=num_classes,
      image_size=dataset_config.image_size, global_batch_size=batch_size,
      eval_batch_size=eval_batch_size, seed=seed, process_index=process_index,
      process_count=process_count,
      color_distortion=dataset_config.color_distortion,
      min_crop_area=dataset_config.min_crop_area, label_offset=offset)
  source.classes = recorded
  return source


for _name in SPECS:
  register(_name)(create)
