"""Helpers for training tests: a tiny config of the demo, in-process and command-line runs."""

import contextlib
import importlib.util
import json
import os
import socket
import subprocess
import sys
from unittest import mock

import jax
import numpy as np
import pytest

from configs import demo
from inception_jax import checkpoint as ckpt, tf_import

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Steps of the `straight` run (conftest.py), the reference for the resume tests.
STEPS = 12

# Tests that compile for TPU slices (inception_jax.aot) need libtpu; CI installs it.
needs_libtpu = pytest.mark.skipif(importlib.util.find_spec('libtpu') is None,
                                  reason='libtpu is not installed: pip install -e ".[tpu]"')

# The demo's network, narrower and shallower: compiles in seconds, same code paths.
TINY_CONFIG = 'configs/demo.py:tiny'


def setup_py():
  """setup.py as a module (it calls setup() only when run as a script): its requirement lists."""
  spec = importlib.util.spec_from_file_location('inception_jax_setup',
                                                os.path.join(ROOT, 'setup.py'))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def tiny_config(**overrides):
  """`configs/demo.py:tiny` with `overrides` ({'model.dtype': 'bfloat16', 'batch_size': 8})."""
  config = demo.get_config('tiny')
  for key, value in overrides.items():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def command(workdir, *extra_flags, config=TINY_CONFIG, **overrides):
  """The training job's command line for `config` with `overrides` as --config.KEY=VALUE flags."""
  flags = [f'--config.{k}={v}' for k, v in overrides.items()]
  return [sys.executable, '-m', 'inception_jax.main', f'--config={config}',
          f'--workdir={workdir}', *flags, *extra_flags]


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def start_processes(workdir, count=2, peer_timeout=3, env=None, **overrides):
  """`count` processes of one job on 127.0.0.1, each in a process group of its own (as a shell
  runs a job: its parent and child, inception_jax/supervise.py), stdout and stderr piped. By
  default they train for long, checkpointing every 10 steps, with a log line every 5."""
  port = free_port()
  settings = dict(num_train_steps=100000, checkpoint_every_steps=10, log_every_steps=5,
                  eval_every_steps=100000)
  settings.update(overrides)
  return [subprocess.Popen(
      command(workdir, f'--coordinator_address=127.0.0.1:{port}', f'--num_processes={count}',
              f'--process_id={i}', f'--peer_timeout={peer_timeout}', **settings),
      cwd=ROOT, env=env or environment(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      text=True, start_new_session=True) for i in range(count)]


def environment(devices=1):
  env = dict(os.environ, JAX_PLATFORMS='cpu', PYTHONUNBUFFERED='1')
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  return env


def run(workdir, *extra_flags, devices=1, check=True, timeout=600, **overrides):
  return subprocess.run(command(workdir, *extra_flags, **overrides), cwd=ROOT,
                        env=environment(devices), capture_output=True, text=True, check=check,
                        timeout=timeout)


def metrics(workdir):
  with open(os.path.join(workdir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def losses(workdir):
  return [(m['step'], m['loss']) for m in metrics(workdir) if 'loss' in m]


def final_variables(workdir):
  return jax.tree_util.tree_map(np.asarray, ckpt.load_variables(workdir))


def assert_trees_equal(a, b):
  flat_a = jax.tree_util.tree_leaves_with_path(a)
  flat_b = jax.tree_util.tree_leaves_with_path(b)
  assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
  for (path, x), (_, y) in zip(flat_a, flat_b):
    np.testing.assert_array_equal(x, y, err_msg=jax.tree_util.keystr(path))


def write_image_folder(root, corrupt=True):
  """PATH/{train,val}/<class>/ with JPEGs, one PNG and (optionally) one corrupt file."""
  tf = tf_import.tensorflow()
  rng = np.random.default_rng(0)
  for split, count in (('train', 6), ('val', 2)):
    for label, name in enumerate(['cat', 'dog']):
      directory = root / split / name
      directory.mkdir(parents=True)
      for i in range(count):
        base = np.full((60 + 10 * i, 80, 3), 40 + 150 * label, np.uint8)
        image = np.clip(base + rng.integers(0, 30, base.shape), 0, 255).astype(np.uint8)
        if i == 0:
          (directory / f'{i}.png').write_bytes(tf.io.encode_png(image).numpy())
        else:
          (directory / f'{i}.jpg').write_bytes(tf.io.encode_jpeg(image).numpy())
  if corrupt:
    (root / 'train' / 'dog' / 'broken.jpg').write_bytes(b'\xff\xd8\xff\xe0 not really a jpeg')
  return root


@contextlib.contextmanager
def mocked_tfds(num_examples: int):
  """`tfds.testing.mock_data`, but for the data source's batched read: TFDS 4.9's mock sets the
  array-record source's `__getitems__` unbound, so that `source.__getitems__(keys)` (what
  `inception_jax.data.tfds_sources` calls) fails; here it reads the mock's examples one by one."""
  import tensorflow_datasets as tfds
  try:  # TFDS 4.9.4 and later: the data sources' base class
    from tensorflow_datasets.core.data_sources.base import BaseDataSource as source_class
  except ImportError:  # TFDS 4.9.3, the floor: the ArrayRecord source alone
    from tensorflow_datasets.core.data_sources.array_record import (
      ArrayRecordDataSource as source_class,
    )
  with tfds.testing.mock_data(num_examples=num_examples), mock.patch.object(
      source_class, '__getitems__', lambda self, keys: [self[k] for k in keys]):
    yield
