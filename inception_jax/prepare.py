"""Prepares ImageNet or CIFAR-10 for training: TFDS's `array_record` files, which the job reads by
index.

    python -m inception_jax.prepare imagenet2012 --data_dir=/data/tfds --manual_dir=/data/ilsvrc
    python -m inception_jax.prepare cifar10 --data_dir=/data/tfds      # downloads 170 MB

then train with `--config.dataset.data_dir=/data/tfds` (the last line printed gives the command).
The training job never downloads or prepares data: it reads what this command wrote.

imagenet2012: ImageNet is not downloadable without an account. Register at image-net.org
(https://image-net.org/download-images), download ILSVRC2012_img_train.tar (138 GiB) and
ILSVRC2012_img_val.tar (6.3 GiB) into one directory and pass it as --manual_dir, the archives as
they are (not extracted). Their layout is checked before the hours of work start; the prepared
copy takes about as much space again in --data_dir.

cifar10: downloads cifar-10-binary.tar.gz from cs.toronto.edu. On a machine without internet,
download that file elsewhere, copy it into a directory and pass the directory as --manual_dir.

Rerunning on a prepared --data_dir says so and changes nothing. An interrupted run can be rerun:
it starts over, deleting the partial output that the interrupted run left. The work is TFDS's own
(its builders' `download_and_prepare`), with progress bars.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import socket
import sys
import tarfile
import tempfile
from typing import Iterator
import urllib.parse
import urllib.request

from absl import flags
from etils import epath

from inception_jax import cli, errors, imagenet, startup, tf_import, workdir as wd
from inception_jax.data.datasets import (
  ARRAY_RECORD,
  CIFAR10_FILE,
  CIFAR10_URL,
  DATASETS,
  IMAGENET_SITE,
  IMAGENET_TEST,
  IMAGENET_TRAIN,
  IMAGENET_VAL,
  manual_hint,
  missing_module,
  problem,
  quiet_tfds,
)
from inception_jax.errors import MissingError, UserError


@contextlib.contextmanager
def _read_tar(path: str, what: str) -> Iterator[tuple[tarfile.TarFile, list[tarfile.TarInfo]]]:
  """The tar archive at `path` and its members, read to its end so that a truncated file fails
  here; an error saying that it is not `what` otherwise."""
  with epath.Path(path).open('rb') as file:
    try:
      archive = tarfile.open(fileobj=file, mode='r:')
    except tarfile.TarError as e:
      raise MissingError(f'{path} is not {what}: it is not an uncompressed tar archive ({e}). '
                         f'Expected {manual_hint("imagenet2012")}.') from e
    try:
      members = archive.getmembers()
    except tarfile.TarError as e:  # the file ends in the middle of a member
      raise MissingError(f'{path} is not {what}: {e} (an incomplete download?). Download it '
                         f'again from {IMAGENET_SITE}.') from e
    yield archive, members


def check_imagenet_val(path: str) -> int:
  """The number of images in the validation archive; an error when it is not one."""
  what = 'the ILSVRC2012 validation archive'
  pattern = re.compile(r'ILSVRC2012_val_\d{8}\.JPEG')
  with _read_tar(path, what) as (_, members):
    for member in members:
      if not pattern.fullmatch(member.name):
        raise MissingError(
            f'{path} is not {what}: it holds {member.name}, where image-net.org\'s holds only '
            'the 50,000 images ILSVRC2012_val_00000001.JPEG ... ILSVRC2012_val_00050000.JPEG (no '
            f'folders; TFDS labels them from its own list). Download it again from '
            f'{IMAGENET_SITE}.')
  if not members:
    raise MissingError(f'{path} is not {what}: it holds no images.')
  return len(members)


def check_imagenet_train(path: str) -> int:
  """The number of classes in the training archive; an error when it is not one."""
  what = 'the ILSVRC2012 training archive'
  synsets = set(imagenet.wnids())
  expected = ('one tar per class named after its WordNet ID (n01440764.tar ... n15075141.tar), '
              'each holding that class\'s JPEGs')
  with _read_tar(path, what) as (archive, members):
    for member in members:
      if not member.name.endswith('.tar') or member.name[:-4] not in synsets:
        raise MissingError(f'{path} is not {what}: it holds {member.name}, where image-net.org\'s '
                           f'holds {expected}. Download it again from {IMAGENET_SITE}.')
      try:
        tarfile.open(fileobj=archive.extractfile(member), mode='r:').close()
      except tarfile.TarError as e:
        raise MissingError(f'{path} is not {what}: its {member.name} is not a tar ({e}); '
                           f'expected {expected}.') from e
  if not members:
    raise MissingError(f'{path} is not {what}: it holds no class archives.')
  return len(members)


def check_manual_dir(name: str, manual_dir: str | None) -> None:
  """An error naming the files and where to get them unless `manual_dir` holds them."""
  spec = DATASETS[name]
  if not manual_dir:
    if spec.manual_required:
      raise MissingError(f'{name} is prepared from files you download yourself: pass the '
                         f'directory holding them as --manual_dir. It must hold '
                         f'{manual_hint(name)}.')
    return
  missing = [f for f in spec.manual_files if not epath.Path(manual_dir, f).exists()]
  if missing:
    looked = ', '.join(os.path.join(manual_dir, f) for f in missing)
    raise MissingError(f'{name}: --manual_dir={manual_dir} has no {" and no ".join(missing)} '
                       f'(looked for {looked}).\n--manual_dir must hold {manual_hint(name)}.')
  if name == 'imagenet2012':
    images = check_imagenet_val(os.path.join(manual_dir, IMAGENET_VAL))
    classes = check_imagenet_train(os.path.join(manual_dir, IMAGENET_TRAIN))
    if (images, classes) != (50_000, 1000):
      print(f'note: the archives hold {classes} of the 1,000 classes and {images:,} of the 50,000 '
            'validation images; preparing what is there.')
    if epath.Path(manual_dir, IMAGENET_TEST).exists():
      print(f'note: {IMAGENET_TEST} is in --manual_dir, so TFDS prepares its unlabelled test '
            'split too; move it elsewhere to save the time.')


def check_online(url: str) -> None:
  """Fails in seconds, rather than after minutes of retries, when `url`'s host is unreachable."""
  if urllib.request.getproxies():
    return  # the download goes through a proxy: the host itself may well be unreachable
  host = urllib.parse.urlparse(url).hostname
  try:
    socket.create_connection((host, 443), timeout=20).close()
  except OSError as e:
    file = url.rsplit('/', 1)[1]
    raise MissingError(f'Cannot reach {host} to download {url} ({e}). Without internet: download '
                       f'{file} on another machine, copy it into a directory here and pass that '
                       'directory as --manual_dir.') from e


@contextlib.contextmanager
def exclusive(dataset_dir: str) -> Iterator[None]:
  """Holds a lock on `dataset_dir` (local ones), so that a second run fails rather than deleting
  the partial output of a first one that is still running."""
  os.makedirs(dataset_dir, exist_ok=True)
  handle = os.open(dataset_dir, os.O_RDONLY)
  try:
    try:
      fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError as e:
      raise UserError(f'Another process is preparing into {dataset_dir}; let it finish (or stop '
                      'it) before rerunning.') from e
    yield
  finally:
    os.close(handle)


def remove_leftovers(dataset_dir: str) -> None:
  """Deletes the partial output of interrupted runs: TFDS writes into `incomplete.*` and renames
  it when done, so anything left under that name is from a run that never finished."""
  # deferred: TFDS loads TensorFlow, only to prepare
  from tensorflow_datasets.core import constants
  for entry in sorted(os.listdir(dataset_dir)):
    if entry.startswith(constants.INCOMPLETE_PREFIX):
      path = os.path.join(dataset_dir, entry)
      print(f'Deleting {path}, left by an interrupted run.')
      shutil.rmtree(path)


def failure(name: str, error: Exception, manual_dir: str | None) -> Exception:
  """`error` from TFDS's preparation as a message with its cause and the fix; `error` itself when
  it is not one of the known kinds (a bug: its traceback is wanted)."""
  # deferred: TFDS loads TensorFlow, only to prepare
  from tensorflow_datasets.core.download import download_manager
  if isinstance(error, ImportError):
    return missing_module(name, error)
  if isinstance(error, download_manager.NonMatchingChecksumError):
    if manual_dir:
      path = os.path.join(manual_dir, CIFAR10_FILE)
      return MissingError(f'{path} is not the file that TFDS knows as {CIFAR10_URL}: its size or '
                          'checksum differs (an incomplete download, or another file under that '
                          f'name?). Download it again from {CIFAR10_URL}.')
    return MissingError(f'The download of {name} is damaged: {error}\nRerun to download it again.')
  if isinstance(error, OSError):
    if type(error).__module__.startswith('requests'):
      return MissingError(f'Downloading {name} failed: {error}\nRerun to try again; without '
                          f'internet, pass --manual_dir holding {manual_hint(name)}.')
    return MissingError(f'Preparing {name} failed: {error}\nFix the cause (the permissions of '
                        'the directories? free space?) and rerun: the partial output was removed.')
  return error


def prepare(name: str, data_dir: str, manual_dir: str | None = None) -> str:
  """Prepares `name` in `data_dir` unless it is there already; returns its directory."""
  try:
    # deferred: TFDS loads TensorFlow, only to prepare
    import tensorflow_datasets as tfds
    with quiet_tfds():
      builder = tfds.builder(name, data_dir=data_dir)
      if builder.is_prepared():
        why_not = problem(builder, name)
        if why_not:
          raise MissingError(why_not)
        print(f'{name} is already prepared in {builder.data_dir}; nothing to do.')
        return builder.data_dir
      check_manual_dir(name, manual_dir)
      if not manual_dir and DATASETS[name].url:
        check_online(DATASETS[name].url)
      tf_import.tensorflow()  # before TFDS imports it: keeps TensorFlow off the accelerators
      tfds.display_progress_bar(True)
      config = tfds.download.DownloadConfig(manual_dir=manual_dir, try_download_gcs=False)
      dataset_dir = os.path.dirname(builder.data_dir)
      local = not wd.is_remote(dataset_dir)
      if local:
        with exclusive(dataset_dir):
          remove_leftovers(dataset_dir)
          builder.download_and_prepare(download_config=config, file_format=ARRAY_RECORD)
      else:
        staged(name, builder, config)
  except UserError:
    raise
  except ImportError as e:
    raise missing_module(name, e) from e
  except Exception as e:  # pylint: disable=broad-except
    reported = failure(name, e, manual_dir)
    if reported is e:
      raise
    raise reported from e
  return builder.data_dir


def staged(name: str, builder, config) -> None:
  """Prepares `name` in a local temporary directory, then copies it to `builder`'s object store
  (ArrayRecord's writer and TFDS's extractor write local files only); dataset_info.json, which
  tells TFDS that the data is prepared, comes last."""
  # deferred: TFDS loads TensorFlow, only to prepare
  import tensorflow_datasets as tfds
  with tempfile.TemporaryDirectory(prefix='inception_jax_prepare_') as staging:
    local = tfds.builder(name, data_dir=staging)
    local.download_and_prepare(download_config=config, file_format=ARRAY_RECORD)
    print(f'Copying {local.data_dir} to {builder.data_dir}.')
    wd.copy_tree(local.data_dir, builder.data_dir, last=('dataset_info.json',))


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags (the convention of `inception_jax.cli`); the dataset is its argument."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string('data_dir', None, 'TFDS data directory to write (local or gs://); the job '
                      'reads it with --config.dataset.data_dir.', **define)
  flags.DEFINE_string('manual_dir', None, f'imagenet2012: the directory holding {IMAGENET_TRAIN} '
                      f'and {IMAGENET_VAL}. cifar10 (optional, for machines without internet): '
                      f'the directory holding {CIFAR10_FILE}.', **define)
  flags.mark_flags_as_required(['data_dir'], flag_values)


def main(argv, FLAGS: flags.FlagValues) -> None:
  if len(argv) != 2:
    given = f' (given: {" ".join(argv[1:])})' if len(argv) > 1 else ''
    raise errors.ConfigError(f'Name one dataset to prepare, of {", ".join(DATASETS)}{given}: '
                             'python -m inception_jax.prepare DATASET --data_dir=DATA_DIR.')
  if argv[1] not in DATASETS:
    raise errors.ConfigError(f'{argv[1]!r} is not a dataset to prepare: choose one of '
                             f'{", ".join(DATASETS)}.')
  dataset = argv[1]
  startup.start()
  # Absolute, unless URLs: the printed flags work from anywhere.
  data_dir = wd.absolute(FLAGS.data_dir)
  manual_dir = FLAGS.manual_dir and wd.absolute(FLAGS.manual_dir)
  try:
    wd.check(data_dir, '--data_dir')
    wd.check(manual_dir, '--manual_dir')
    where = prepare(dataset, data_dir, manual_dir)
  except KeyboardInterrupt:
    sys.stderr.write('\nInterrupted. Rerun the same command to start over.\n')
    sys.exit(130)
  print(f'{dataset} is in {where}. Train on it with --config.dataset.data_dir={data_dir}, '
        f'e.g.\n  python -m inception_jax.main --config={DATASETS[dataset].config} '
        f'--workdir=WORKDIR --config.dataset.data_dir={data_dir}')


if __name__ == '__main__':
  cli.run(define_flags, main)
