"""Helpers for training tests: a tiny config of the demo, in-process and command-line runs."""

import json
import os
import subprocess
import sys

import jax
import numpy as np

from configs import demo
from inception_jax import checkpoint as ckpt

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# The demo's network, narrower and shallower: compiles in seconds, same code paths.
TINY = {
    'model.depth_multiplier': 0.125,
    'model.repeats': (1, 1, 1),
    'dataset.image_size': 16,
    'batch_size': 16,
    'eval_batch_size': 64,
    'num_train_steps': 8,
    'log_every_steps': 2,
    'checkpoint_every_steps': 4,
    'eval_every_steps': 8,
}


def tiny_config(**overrides):
  config = demo.get_config()
  for key, value in {**TINY, **overrides}.items():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def command(workdir, *extra_flags, config='configs/demo.py', **overrides):
  flags = [f'--config.{k}={v}' for k, v in {**TINY, **overrides}.items()]
  return [sys.executable, '-m', 'inception_jax.main', f'--config={config}',
          f'--workdir={workdir}', *flags, *extra_flags]


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
