"""`python -m inception_jax.prepare` on tiny archives in the real layouts of ILSVRC2012 and
CIFAR-10, and the job's errors for data it cannot read.

No network: ImageNet is prepared from archives anyway; CIFAR-10 from --manual_dir, with TFDS's
checksum of the real archive swapped for the fake's (the only thing patched). The ImageNet run,
one error and --help run the command as a user does; the rest run it in this process
(`inception_jax.cli.call`): the same code without the start-up time.
"""

import importlib.resources
import io
import os
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from inception_jax import cli, errors, imagenet, prepare, tf_import
from inception_jax.data import create_source

from train_utils import ROOT, assert_near_chance_over, environment, metrics, tiny_config

tf = tf_import.tensorflow()

# The first two ImageNet classes (labels 0 and 1); their images are dark and bright respectively.
CLASSES = ['n01440764', 'n01443537']
# 40 training images, as test_data.py's mock ImageNet: the same steps per epoch, so the training
# below compiles the same programs as its (the compilation cache holds them once).
PER_CLASS, VAL_IMAGES = 20, 8


def prepare_command(*args):
  return [sys.executable, '-m', 'inception_jax.prepare', *map(str, args)]


def run_prepare(*args):
  """The command's (exit status, stdout, stderr), run as a user runs it."""
  result = subprocess.run(prepare_command(*args), cwd=ROOT, env=environment(),
                          capture_output=True, text=True, timeout=300)
  return result.returncode, result.stdout, result.stderr


def prepare_here(capsys, *args):
  """The command's (exit status, stdout, stderr), run in this process."""
  try:
    cli.call(prepare, args)
    status = 0
  except SystemExit as e:
    status = e.code
  out, err = capsys.readouterr()
  return status, out, err


def prepare_cifar10(capsys, manual_dir, data_dir):
  """Prepares CIFAR-10 from the archive in `manual_dir` (must succeed); returns stdout."""
  status, stdout, stderr = prepare_here(capsys, 'cifar10', f'--data_dir={data_dir}',
                                        f'--manual_dir={manual_dir}')
  assert status == 0, stderr
  return stdout


def add(archive, name, data):
  info = tarfile.TarInfo(name)
  info.size = len(data)
  archive.addfile(info, io.BytesIO(data))


def jpeg(value, height=40, width=48):
  return tf.io.encode_jpeg(np.full((height, width, 3), value, np.uint8)).numpy()


def class_tar(wnid):
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode='w') as archive:
    for j in range(PER_CLASS):
      value = 20 + 100 * CLASSES.index(wnid) + 2 * j
      add(archive, f'{wnid}_{10026 + j}.JPEG', jpeg(value, 36 + j))
  return buffer.getvalue()


def write_ilsvrc(manual_dir, train=True, val=True):
  """ILSVRC2012_img_train.tar (a tar of per-class tars) and ILSVRC2012_img_val.tar (flat JPEGs,
  image i with pixel value 10 * i) as image-net.org serves them, in miniature."""
  os.makedirs(manual_dir, exist_ok=True)
  if train:
    with tarfile.open(os.path.join(manual_dir, prepare.IMAGENET_TRAIN), 'w') as archive:
      for wnid in CLASSES:
        add(archive, f'{wnid}.tar', class_tar(wnid))
  if val:
    with tarfile.open(os.path.join(manual_dir, prepare.IMAGENET_VAL), 'w') as archive:
      for i in range(1, VAL_IMAGES + 1):
        add(archive, f'ILSVRC2012_val_{i:08d}.JPEG', jpeg(10 * i))
  return manual_dir


def write_cifar10(path, train_per_file=4, test=6):
  """cifar-10-binary.tar.gz in the real layout: five training files and a test file of records
  made of a label byte and the 32x32 image's R, G and B planes. Image k (counting training images
  first) is uniform (k, 2k, 255 - k) with label k % 10. Returns {k: label}."""
  expected, k = {}, 0
  with tarfile.open(path, 'w:gz') as archive:
    names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship',
             'truck']
    add(archive, 'cifar-10-batches-bin/batches.meta.txt', '\n'.join(names).encode() + b'\n\n')
    for name in [f'data_batch_{i}.bin' for i in range(1, 6)] + ['test_batch.bin']:
      records = []
      for _ in range(test if name == 'test_batch.bin' else train_per_file):
        planes = np.stack([np.full((32, 32), v, np.uint8) for v in (k, 2 * k, 255 - k)])
        records.append(bytes([k % 10]) + planes.tobytes())
        expected[k] = k % 10
        k += 1
      add(archive, f'cifar-10-batches-bin/{name}', b''.join(records))
  return expected


@pytest.fixture
def cifar10_manual_dir(tmp_path, monkeypatch):
  """A directory holding a miniature cifar-10-binary.tar.gz, and {image: label} in it. TFDS checks
  a file in --manual_dir against the real archive's checksum, so the fake's is registered."""
  import tensorflow_datasets as tfds
  from tensorflow_datasets.core.download import checksums
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  archive = manual_dir / prepare.CIFAR10_FILE
  expected = write_cifar10(archive)
  monkeypatch.setitem(tfds.builder_cls('cifar10').url_infos, prepare.CIFAR10_URL,
                      checksums.compute_url_info(archive))
  return manual_dir, expected


def open_source(name, data_dir):
  config = tiny_config(**{'dataset.name': name, 'dataset.image_size': 32})
  config.dataset.data_dir = str(data_dir)
  return create_source(config.dataset, batch_size=4, eval_batch_size=4, seed=0, process_index=0,
                       process_count=1)


def read_all(reader, size):
  encoded, labels, _ = reader(np.arange(size))
  return [tf.io.decode_image(e).numpy() for e in encoded], list(labels)


def test_imagenet_from_the_ilsvrc_archives_to_training(tmp_path):
  """The command as a user runs it, on a data_dir where an interrupted run left partial output;
  then the job's source reads the right labels, the job trains, and evaluation of its workdir
  finds the data without being told where."""
  manual_dir, data_dir = write_ilsvrc(tmp_path / 'manual'), tmp_path / 'data'
  leftover = data_dir / 'imagenet2012' / 'incomplete.ABC123_5.1.0'
  leftover.mkdir(parents=True)
  (leftover / 'imagenet2012-train.array_record-00000-of-00004').write_bytes(b'partial')
  status, stdout, stderr = run_prepare('imagenet2012', f'--data_dir={data_dir}',
                                       f'--manual_dir={manual_dir}')
  assert status == 0, stderr
  assert f'Deleting {leftover}, left by an interrupted run.' in stdout and not leftover.exists()
  assert 'Generating train examples' in stderr  # TFDS's progress bars are on
  assert stdout.strip().endswith(f'--config.dataset.data_dir={data_dir}')

  source = open_source('imagenet2012', data_dir)
  assert (source.train_size, source.eval_size, source.num_classes) == (2 * PER_CLASS, 8, 1000)
  images, labels = read_all(source.read_train, 2 * PER_CLASS)
  assert sorted(labels) == [0] * PER_CLASS + [1] * PER_CLASS
  for image, label in zip(images, labels):  # dark images are class 0's, bright ones class 1's
    assert (image.mean() > 90) == (label == 1)
  # Validation labels come from TFDS's list, by image name.
  names = importlib.resources.files('tensorflow_datasets').joinpath(
      'datasets/imagenet2012/validation_labels.txt').read_text().split()
  expected = {i: imagenet.wnids().index(names[i - 1]) for i in range(1, VAL_IMAGES + 1)}
  images, labels = read_all(source.read_eval, VAL_IMAGES)
  assert {round(image.mean() / 10): label for image, label in zip(images, labels)} == expected

  from inception_jax import train  # test_data.py's training on mock ImageNet, on these files
  config = tiny_config(**{'dataset.name': 'imagenet2012', 'dataset.image_size': 75,
                          'model.small_inputs': False, 'num_train_steps': 2,
                          'batch_size': 8, 'eval_batch_size': 8})
  config.dataset.data_dir = str(data_dir)
  workdir = str(tmp_path / 'workdir')
  result = train.train_and_evaluate(config, workdir)
  assert result['eval_examples'] == VAL_IMAGES
  assert_near_chance_over(result, examples=VAL_IMAGES, classes=1000)
  assert [m['step'] for m in metrics(workdir) if 'loss' in m] == [2]

  # Evaluation reads the run's data_dir (its model.json records it), without --data_dir.
  from inception_jax import checkpoint as ckpt, evaluate
  assert ckpt.ModelRecord.read(workdir).data == {
      'name': 'imagenet2012', 'data_dir': str(data_dir), 'eval_split': None}
  [record] = evaluate.evaluate([workdir], [1], progress=False)
  assert record['dataset'] == 'imagenet2012' and record['images'] == VAL_IMAGES
  assert (record['top1'], record['top5']) == (result['eval_top1'], result['eval_top5'])
  elsewhere = tmp_path / 'elsewhere'
  with pytest.raises(errors.MissingError, match=f'imagenet2012 is not prepared in {elsewhere}'):
    evaluate.evaluate([workdir], [1], data_dir=str(elsewhere))


def test_cifar10_offline_from_the_archive_in_manual_dir(cifar10_manual_dir, tmp_path, capsys):
  manual_dir, expected = cifar10_manual_dir
  data_dir = tmp_path / 'data'
  stdout = prepare_cifar10(capsys, manual_dir, data_dir)
  assert stdout.strip().endswith(f'--config.dataset.data_dir={data_dir}')
  source = open_source('cifar10', data_dir)
  assert (source.train_size, source.eval_size, source.num_classes) == (20, 6, 10)
  for reader, size, split in ((source.read_train, 20, range(20)),
                              (source.read_eval, 6, range(20, 26))):
    seen = {}
    for image, label in zip(*read_all(reader, size)):
      k = int(image[0, 0, 0])
      assert (image == np.array([k, 2 * k, 255 - k], np.uint8)).all()  # PNG: exact
      seen[k] = label
    assert seen == {k: expected[k] for k in split}


def test_rerun_on_prepared_data_is_a_no_op(cifar10_manual_dir, tmp_path, capsys):
  manual_dir, _ = cifar10_manual_dir
  data_dir = tmp_path / 'data'
  prepare_cifar10(capsys, manual_dir, data_dir)
  before = [(p, p.stat().st_mtime_ns) for p in sorted(data_dir.rglob('*'))]
  status, stdout, stderr = prepare_here(capsys, 'cifar10', f'--data_dir={data_dir}')
  assert status == 0, stderr
  assert 'cifar10 is already prepared' in stdout
  assert stdout.strip().endswith(f'--config.dataset.data_dir={data_dir}')
  assert [(p, p.stat().st_mtime_ns) for p in sorted(data_dir.rglob('*'))] == before


def test_a_wrong_cifar10_archive_is_named(tmp_path, capsys):
  manual_dir = tmp_path / 'manual'
  manual_dir.mkdir()
  write_cifar10(manual_dir / prepare.CIFAR10_FILE)  # not the real one: its checksum differs
  status, _, stderr = prepare_here(capsys, 'cifar10', f'--data_dir={tmp_path / "data"}',
                                   f'--manual_dir={manual_dir}')
  assert status == errors.EXIT_STATUS
  assert (f'{manual_dir / prepare.CIFAR10_FILE} is not the file that TFDS knows as '
          f'{prepare.CIFAR10_URL}') in stderr


def test_tfrecord_data_is_named_as_such(cifar10_manual_dir, tmp_path):
  """Data prepared by `tfds build` without --file_format=array_record (or by tfds.load)."""
  import tensorflow_datasets as tfds
  manual_dir, _ = cifar10_manual_dir
  data_dir = tmp_path / 'data'
  tfds.builder('cifar10', data_dir=str(data_dir)).download_and_prepare(
      download_config=tfds.download.DownloadConfig(manual_dir=str(manual_dir)))
  for attempt in (lambda: open_source('cifar10', data_dir),
                  lambda: prepare.prepare('cifar10', str(data_dir))):
    with pytest.raises(errors.MissingError, match='in tfrecord format') as failure:
      attempt()
    assert f'prepare cifar10 --data_dir={data_dir}' in str(failure.value)


def test_damaged_or_unreadable_files_are_reported_as_such(cifar10_manual_dir, tmp_path,
                                                          monkeypatch):
  manual_dir, _ = cifar10_manual_dir
  data_dir = tmp_path / 'data'
  prepare.prepare('cifar10', str(data_dir), str(manual_dir))
  shard, = (data_dir / 'cifar10').glob('*/cifar10-test.array_record-*')
  content = shard.read_bytes()
  shard.write_bytes(content[:1000])  # a copy cut short
  with pytest.raises(errors.MissingError, match='a file is damaged or missing') as failure:
    open_source('cifar10', data_dir)
  assert 'not prepared' not in str(failure.value)
  assert f'prepare cifar10 --data_dir={data_dir}' in str(failure.value)

  shard.write_bytes(content)
  open_source('cifar10', data_dir)  # whole again
  import tensorflow_datasets as tfds

  def data_source(*args, **kwargs):  # as for a user without read access (tests run as root)
    raise PermissionError(13, 'Permission denied', str(shard))

  monkeypatch.setattr(tfds, 'data_source', data_source)
  with pytest.raises(errors.MissingError, match='Permission denied') as failure:
    open_source('cifar10', data_dir)
  assert 'read access' in str(failure.value) and 'not prepared' not in str(failure.value)


def test_prepare_errors_name_the_files_and_where_to_get_them(tmp_path, capsys):
  """Each case fails in a few lines without a traceback, saying what was expected and where, and
  before writing anything."""
  manual = {name: tmp_path / name for name in
            ('missing_train', 'val_not_a_tar', 'train_of_jpegs', 'truncated_train', 'no_cifar')}
  write_ilsvrc(manual['missing_train'], train=False)
  write_ilsvrc(manual['val_not_a_tar'], val=False)
  (manual['val_not_a_tar'] / prepare.IMAGENET_VAL).write_bytes(os.urandom(20_000))
  write_ilsvrc(manual['train_of_jpegs'], train=False)
  with tarfile.open(manual['train_of_jpegs'] / prepare.IMAGENET_TRAIN, 'w') as archive:
    add(archive, 'n01440764_10026.JPEG', jpeg(0))
  write_ilsvrc(manual['truncated_train'])
  train = manual['truncated_train'] / prepare.IMAGENET_TRAIN
  train.write_bytes(train.read_bytes()[:train.stat().st_size // 2])
  manual['no_cifar'].mkdir()
  cases = {
      # name: (dataset, what stderr must say)
      'no_manual_dir': ('imagenet2012', ['pass the directory holding them as --manual_dir',
                                         prepare.IMAGENET_TRAIN, prepare.IMAGENET_VAL,
                                         prepare.IMAGENET_SITE]),
      'missing_train': ('imagenet2012', [
          f'has no {prepare.IMAGENET_TRAIN}',
          f'(looked for {manual["missing_train"] / prepare.IMAGENET_TRAIN})',
          prepare.IMAGENET_SITE]),
      'val_not_a_tar': ('imagenet2012', [
          f'{prepare.IMAGENET_VAL} is not the ILSVRC2012 validation archive',
          'not an uncompressed tar archive', prepare.IMAGENET_SITE]),
      'train_of_jpegs': ('imagenet2012', [
          f'{prepare.IMAGENET_TRAIN} is not the ILSVRC2012 training archive',
          'it holds n01440764_10026.JPEG', 'one tar per class', 'n01440764.tar']),
      'truncated_train': ('imagenet2012', ['unexpected end of data', 'incomplete download']),
      'no_cifar': ('cifar10', [f'has no {prepare.CIFAR10_FILE}', prepare.CIFAR10_URL]),
      'unknown_dataset': ('mnist', ["'mnist' is not a dataset to prepare", 'imagenet2012',
                                  'cifar10']),
  }
  for name, (dataset, texts) in cases.items():
    args = [dataset, f'--data_dir={tmp_path / "data" / name}']
    if name in manual:
      args.append(f'--manual_dir={manual[name]}')
    if name == 'missing_train':  # one as a user runs it: the others are the same code
      status, _, stderr = run_prepare(*args)
    else:
      status, _, stderr = prepare_here(capsys, *args)
    assert status == errors.EXIT_STATUS, (name, stderr)
    assert 'Traceback' not in stderr and len(stderr.strip().splitlines()) <= 4, (name, stderr)
    for text in texts:
      assert text in stderr, (name, text, stderr)
    assert not (tmp_path / 'data' / name).exists(), name


def test_help_explains_the_command():
  status, stdout, stderr = run_prepare('--help')
  assert status == 0, stderr
  for text in ('imagenet2012', 'cifar10', '--manual_dir', prepare.IMAGENET_TRAIN,
               prepare.IMAGENET_VAL, 'image-net.org', prepare.CIFAR10_FILE,
               '--config.dataset.data_dir'):
    assert text in stdout, text


def test_unreachable_download_fails_at_once_naming_manual_dir(monkeypatch):
  attempts = []

  def unreachable(address, timeout):
    attempts.append(address)
    raise OSError('Name or service not known')

  monkeypatch.setattr(prepare.socket, 'create_connection', unreachable)
  for variable in ('http_proxy', 'https_proxy', 'all_proxy', 'HTTP_PROXY', 'HTTPS_PROXY',
                   'ALL_PROXY'):
    monkeypatch.delenv(variable, raising=False)
  with pytest.raises(errors.MissingError, match='pass that directory as --manual_dir') as failure:
    prepare.check_online(prepare.CIFAR10_URL)
  assert prepare.CIFAR10_FILE in str(failure.value)
  assert attempts == [('www.cs.toronto.edu', 443)]
  monkeypatch.setenv('https_proxy', 'http://proxy.example:3128')
  prepare.check_online(prepare.CIFAR10_URL)  # through a proxy: TFDS's download may still work
  assert len(attempts) == 1


def test_the_job_names_the_prepare_command_before_any_work(tmp_path, monkeypatch):
  """configs/cifar10.py without prepared data: the job once tried to download it, for minutes
  when offline. Now it stops at once and creates nothing, not even TFDS's default data_dir."""
  from tensorflow_datasets.core import constants

  from configs import cifar10
  from inception_jax import train
  default = tmp_path / 'tensorflow_datasets'  # as ~/tensorflow_datasets is for a user
  monkeypatch.setattr(constants, 'DATA_DIR', str(default))
  with pytest.raises(errors.MissingError) as failure:
    train.train_and_evaluate(cifar10.get_config('irv2'), str(tmp_path / 'workdir'))
  assert (f'cifar10 is not prepared in {default} (TFDS\'s default: config.dataset.data_dir is '
          'unset)') in str(failure.value)
  assert f'python -m inception_jax.prepare cifar10 --data_dir={default}' in str(failure.value)
  assert not os.listdir(tmp_path)  # neither the data_dir nor the workdir

  missing = tmp_path / 'nothere'
  with pytest.raises(FileNotFoundError, match=f'prepare imagenet2012 --data_dir={missing} '
                     '--manual_dir=MANUAL_DIR'):
    open_source('imagenet2012', missing)
  assert not os.listdir(tmp_path)


def test_the_job_reports_an_import_error_as_such(monkeypatch, tmp_path):
  import tensorflow_datasets as tfds

  def data_source(*args, **kwargs):
    raise ModuleNotFoundError("No module named 'array_record'", name='array_record')

  monkeypatch.setattr(tfds, 'data_source', data_source)
  with pytest.raises(ImportError, match='needs the Python module array_record') as failure:
    open_source('imagenet2012', tmp_path)
  assert 'pip install' in str(failure.value) and 'not prepared' not in str(failure.value)


def test_prepare_reports_a_missing_module_with_its_fix(tmp_path, monkeypatch, capsys):
  """TFDS imports importlib_resources to prepare any dataset; a fresh install once lacked it."""
  import tensorflow_datasets as tfds

  def download_and_prepare(self, **kwargs):
    raise ModuleNotFoundError("No module named 'importlib_resources'", name='importlib_resources')

  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare', download_and_prepare)
  status, _, stderr = prepare_here(capsys, 'imagenet2012', f'--data_dir={tmp_path / "data"}',
                                   f'--manual_dir={write_ilsvrc(tmp_path / "manual")}')
  assert status == errors.EXIT_STATUS and 'Traceback' not in stderr, stderr
  assert 'needs the Python module importlib_resources' in stderr
  assert 'pip install importlib_resources' in stderr
