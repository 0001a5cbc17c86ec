"""inception_jax.aot: the job compiled ahead of time for a TPU slice (compile-only devices from
libtpu) or this machine's CPU devices, the memory report, the estimate and the batch search."""

import importlib.util
import json
import math
import os
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from inception_jax import aot, job as training_job, train
from inception_jax.data import create_source
from inception_jax.errors import ConfigError, UserError

from train_utils import (
  ROOT,
  TINY_CONFIG,
  environment,
  needs_libtpu,
  tiny_config,
  write_image_folder,
)

GIB = 2 ** 30


def run_aot(*flags, devices=1):
  return subprocess.run([sys.executable, '-m', 'inception_jax.aot', *flags], cwd=ROOT,
                        env=environment(devices), capture_output=True, text=True, timeout=900)


def test_importing_aot_starts_no_jax():
  """The command sets XLA_FLAGS, JAX_PLATFORMS and libtpu's settings after importing the package
  and before JAX starts: no module of it may import JAX on import."""
  code = ('import importlib, pkgutil, sys\n'
          'import inception_jax.aot as aot\n'
          'for m in pkgutil.iter_modules(aot.__path__):\n'
          '  importlib.import_module(f"inception_jax.aot.{m.name}")\n'
          'print(sorted(k for k in sys.modules if k.split(".")[0] in ("jax", "jaxlib")))')
  done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=environment(1),
                        capture_output=True, text=True, timeout=120)
  assert done.returncode == 0, done.stderr
  assert done.stdout.strip() == '[]'


def test_topology_table_names_match_chip_counts():
  for name, spec in aot.SLICES.items():
    generation, count = name.split('-')
    assert spec.chip == generation and spec.chip in aot.CHIPS
    # v4-N and v5p-N count TensorCores (two per chip, one JAX device); v5e-N, v6e-N count chips.
    assert int(count) == spec.chips * (2 if spec.megacore else 1), name
    assert spec.topology.split(':')[0] == {'v5p': 'v5', 'v5e': 'v5e', 'v6e': 'v6e', 'v4': 'v4'}[
        generation]
    assert spec.chips % math.prod(spec.chips_per_host) == 0, name
  for name in ('v4-8', 'v4-32', 'v4-4096', 'v5e-1', 'v5e-16', 'v5e-256', 'v5p-8', 'v5p-64',
               'v5p-128', 'v6e-1', 'v6e-64', 'v6e-256'):
    assert name in aot.SLICES
  assert aot.SLICES['v5p-128'].topology == 'v5:4x4x4'
  assert len({chip.device_kind for chip in aot.CHIPS.values()}) == len(aot.CHIPS)
  assert aot.SLICES['v5e-16'].topology == 'v5e:4x4'
  with pytest.raises(ConfigError, match='Unknown --topology=v5e-3. Known: .*v5p-128'):
    aot.target('v5e-3')
  with pytest.raises(ConfigError, match='cpu:N'):
    aot.target('cpu:two')


@needs_libtpu
def test_every_named_slice_is_a_jax_topology_of_its_chips():
  for name, spec in aot.SLICES.items():
    where = aot.target(name)
    assert len(where.devices) == spec.chips, name
    assert {d.device_kind for d in where.devices} == {aot.CHIPS[spec.chip].device_kind}, name
    hosts = len({d.process_index for d in where.devices})
    assert hosts == spec.chips // math.prod(spec.chips_per_host), name
    assert where.memory_bytes == aot.CHIPS[spec.chip].hbm_gib * GIB


def test_missing_libtpu_names_the_install(monkeypatch):
  monkeypatch.setattr(importlib.util, 'find_spec',
                      lambda name, *a: None if name == 'libtpu' else find_spec(name, *a))
  with pytest.raises(UserError, match=r'pip install -e "\.\[tpu\]"'):
    aot.target('v5e-4')


find_spec = importlib.util.find_spec


def check_memory(report):
  """The report's memory figures are positive and add up."""
  train_memory = report['train']
  for key in ('argument_bytes', 'output_bytes', 'temp_bytes', 'total_bytes'):
    assert train_memory[key] > 0, key
  assert train_memory['total_bytes'] == (
      train_memory['argument_bytes'] + train_memory['output_bytes'] - train_memory['alias_bytes']
      + train_memory['temp_bytes'] + train_memory['code_bytes'])
  # The state is donated: its buffers are reused for the new state.
  assert train_memory['alias_bytes'] > 0.9 * train_memory['output_bytes']
  # While training the chip also holds the batches sent ahead and the eval step's code.
  assert report['train_resident_bytes'] == (
      train_memory['total_bytes'] + train.PREFETCH * report['train_batch_bytes']
      + report['eval']['code_bytes'])
  assert report['peak_bytes'] == max(report['train_resident_bytes'],
                                     report['eval']['total_bytes'])
  assert report['spare_bytes'] == pytest.approx(
      report['memory_per_chip_bytes'] - report['peak_bytes']
      * (report['chips'] if report['memory_kind'].startswith('host') else 1))
  assert report['fits'] == (report['spare_bytes'] >= 0)


def test_cpu_devices_report_memory_and_no_estimate():
  config = tiny_config(batch_size=16, eval_batch_size=16)
  report = aot.compile_job(config, 'cpu:1')
  assert report['chips'] == 1 and report['per_chip_batch'] == 16
  assert report['model'] == 'inception_resnet_v2' and report['layout'] == 'scan'
  assert report['fits'] and report['memory_kind'].startswith('host memory')
  check_memory(report)
  # Arguments: the state (replicated) and this chip's slice of the batch, as the job passes them.
  job = training_job.Job(config, create_source(config.dataset, batch_size=16, eval_batch_size=16,
                                               seed=0))
  state_bytes = sum(a.size * a.dtype.itemsize
                    for a in jax.tree_util.tree_leaves(job.abstract_state()))
  assert report['train']['argument_bytes'] == pytest.approx(
      state_bytes + report['train_batch_bytes'], rel=1e-3)
  assert report['train']['flops'] > 0
  assert report['estimate'] is None  # no peak figures for CPUs
  text = aot.report_text(report)
  assert 'fits' in text and 'estimate: none' in text
  with pytest.raises(ConfigError, match='xla_force_host_platform_device_count=64'):
    aot.target('cpu:64')


@pytest.mark.parametrize('name,scan,dtype', [('inception_v3', False, 'float32'),
                                             ('inception_v4', False, 'bfloat16'),
                                             ('inception_resnet_v1', True, 'float32')])
def test_every_family_compiles_scanned_or_unrolled_in_either_dtype(name, scan, dtype):
  config = tiny_config(**{'model.name': name, 'model.scan_blocks': scan, 'model.dtype': dtype,
                          'model.small_inputs': False, 'dataset.name': 'synthetic',
                          'dataset.image_size': 75, 'batch_size': 2, 'eval_batch_size': 2})
  if name == 'inception_v3':
    config.model.repeats = None  # its blocks differ: depth_multiplier alone makes it small
  report = aot.compile_job(config, 'cpu:1')
  assert (report['model'], report['dtype']) == (name, dtype)
  assert report['layout'] == ('scan' if scan else 'unrolled')
  assert report['fits']
  # XLA's FLOPs against the network's MACs (2 FLOPs each) for the eval batch of 2; training runs
  # forward and backward (about 3 passes) and the optimizer.
  from inception_jax import steps
  from inception_jax.models import create
  from inception_jax.models.summary import count_macs
  model = create(name, **steps.options_from_config(config, num_classes=1000))
  macs = count_macs(model, jax.eval_shape(lambda: steps.init_variables(model, (75, 75, 3), 0)), 75)
  assert 0.8 < report['eval']['flops'] / (2 * 2 * macs) < 1.5, (report['eval']['flops'], macs)
  assert 2.5 < report['train']['flops'] / report['eval']['flops'] < 5.5, report['train']
  check_memory(report)


def test_command_on_cpu_devices_and_the_jobs_own_batch_error():
  done = run_aot(f'--config={TINY_CONFIG}', '--topology=cpu:2', '--json')
  assert done.returncode == 0, done.stderr
  report = json.loads(done.stdout)
  assert report['chips'] == 2 and report['per_chip_batch'] == 8 and report['fits']
  # A batch the chips cannot split is the training job's own config error, in two lines.
  done = run_aot(f'--config={TINY_CONFIG}', '--topology=cpu:2', '--config.batch_size=15')
  assert done.returncode == 2
  assert 'config.batch_size=15 must be a positive multiple of the 2 devices' in done.stderr
  assert 'Traceback' not in done.stderr and len(done.stderr.strip().splitlines()) <= 3


def fake_compile(memory, error=None):
  """compile_job's stand-in for the search: fits while `memory(per_chip)` <= 100 bytes; a batch
  in `error` does not compile for another reason."""
  calls = []

  def compile_job(config, where, eval_step=True, compiled_train=None):
    per_chip = config.batch_size // len(where.devices)
    if compiled_train is None:
      calls.append(per_chip)
    if error and per_chip in error:
      return {'per_chip_batch': per_chip, 'fits': False, 'error': 'INTERNAL: boom',
              'out_of_memory': False}
    total = memory(per_chip)
    return {'per_chip_batch': per_chip, 'train_batch_bytes': 0, 'peak_bytes': total,
            'fits': total <= 100,
            'train': {'total_bytes': total, 'temp_bytes': total - 10, 'compile_s': 0.0}}
  return compile_job, calls


FAKE = aot.Target('fake', [jax.devices('cpu')[0]] * 2, 'two fakes', 100, False, None, None)


def search(monkeypatch, memory, batch=8, train_size=10_000, **options):
  compile_job, calls = fake_compile(memory, options.pop('error', None))
  # Where the search looks them up.
  monkeypatch.setattr('inception_jax.aot.search.compile_job', compile_job)
  monkeypatch.setattr('inception_jax.aot.search.data_source',
                      lambda config, devices: types.SimpleNamespace(train_size=train_size))
  config = tiny_config(batch_size=batch)
  report = aot.find_max_batch(config, FAKE, **options)
  assert config.batch_size == batch  # the caller's config is left alone
  return report, calls


@pytest.mark.parametrize('memory,answer,compiles', [
    (lambda b: 10 + b, 90, 3),  # linear: the prediction is right
    (lambda b: 10 + b + b * b / 40, 42, 6),  # the memory grows faster than predicted
    (lambda b: 10 + 0.5 * b if b < 60 else 10 + 1.5 * b, 60, 12),  # a jump: bisected
    (lambda b: 60 + b / 4, 160, 4),  # a large fixed part: the line through two points finds it
], ids=['linear', 'convex', 'jump', 'fixed'])
def test_find_max_batch_finds_the_largest_fitting_multiple(monkeypatch, memory, answer, compiles):
  report, calls = search(monkeypatch, memory, batch_step=2)
  assert report['per_chip_batch'] == answer and report['fits']
  assert memory(answer) <= 100 < memory(answer + 2)
  assert len(calls) <= compiles, calls  # a search, not a scan
  assert len(set(calls)) == len(calls)  # no batch compiled twice
  assert report['searched'][str(answer)] and not report['searched'][str(answer + 2)]
  assert 'largest per-chip batch whose train step fits (to 2 images)' in _search_text(report)


def test_find_max_batch_below_the_step_and_at_the_dataset(monkeypatch):
  # Below --batch_step the search goes one image at a time.
  report, _ = search(monkeypatch, lambda b: 70 + 10 * b, batch=8, batch_step=8)
  assert report['per_chip_batch'] == 3
  # Never more images per chip than the training examples split over the chips.
  report, _ = search(monkeypatch, lambda b: b / 1000, train_size=500, batch_step=8)
  assert report['per_chip_batch'] == 248 and report['at_limit'] and report['fits']


def test_find_max_batch_when_nothing_fits_or_compiles(monkeypatch):
  report, calls = search(monkeypatch, lambda b: 200 + b)
  assert not report['fits'] and report['per_chip_batch'] == 1 and calls == [4, 2, 1]
  assert 'search stopped at 1 per chip' in _search_text(report)
  report, _ = search(monkeypatch, lambda b: b, error={8})
  assert not report['fits'] and report['error'] == 'INTERNAL: boom'


def _search_text(report):
  return aot.report._search_line(report)[0]


def test_stand_in_sources_have_the_published_shapes():
  config = tiny_config(batch_size=256, eval_batch_size=256)
  config.dataset.name, config.dataset.image_size = 'imagenet2012', 299
  config.dataset.background_class = True
  source = aot.data_source(config, [jax.devices()[0]])
  assert source.num_classes == 1001 and source.image_shape == (299, 299, 3)
  assert (source.train_size, source.eval_size) == (1_281_167, 50_000)
  assert source.steps_per_epoch == 1_281_167 // 256
  assert set(source.batch_spec(True)) == {'image', 'label', 'mask'}  # as the TFDS source's


def spec_of(batch, processes=1):
  return {k: ((len(v) * processes, *v.shape[1:]), v.dtype) for k, v in batch.items()}


def test_batch_spec_matches_what_sources_yield(tmp_path):
  """What aot compiles for is what the job is fed: keys, dtypes and global shapes."""
  from ml_collections import ConfigDict
  write_image_folder(tmp_path, corrupt=False)
  for name in ('digits', 'synthetic', f'folder:{tmp_path}'):
    dataset = ConfigDict({'name': name, 'image_size': 16, 'background_class': False,
                          'color_distortion': False, 'min_crop_area': 0.5, 'data_dir': None,
                          'eval_split': None})
    source = create_source(dataset, batch_size=4, eval_batch_size=4, seed=0, process_index=1,
                           process_count=2)
    assert spec_of(next(iter(source.train_batches(0))), 2) == source.batch_spec(True), name
    assert spec_of(next(iter(source.eval_batches())), 2) == source.batch_spec(False), name


@needs_libtpu
def test_tpu_slice_compiles_with_consistent_figures(optimized):
  # (XLA's optimisations on, as in the command: without them XLA:TPU reports no temporaries.)
  # A batch big enough for temporaries in HBM (at 8 images per chip XLA:TPU reports none).
  config = tiny_config(**{'model.dtype': 'bfloat16', 'batch_size': 128, 'eval_batch_size': 32})
  report = aot.compile_job(config, 'v5e-4')
  assert report['chips'] == 4 and report['device_kind'] == aot.CHIPS['v5e'].device_kind
  assert report['per_chip_batch'] == 32 and report['fits']
  assert report['memory_kind'] == 'HBM usable by XLA'
  assert report['memory_per_chip_bytes'] == 15.75 * GIB  # what XLA:TPU says is available
  check_memory(report)
  guess = report['estimate']
  chip = aot.CHIPS['v5e']
  assert guess['compute_bound_s'] == pytest.approx(
      report['train']['flops'] / (chip.peak_bf16_tflops * 1e12))
  assert guess['memory_bound_s'] == pytest.approx(
      report['train']['bytes_accessed'] / (chip.hbm_gbytes_per_s * 1e9))
  assert guess['step_s'] == max(guess['compute_bound_s'], guess['memory_bound_s']) > 0
  assert guess['img_per_s'] == pytest.approx(4 * guess['img_per_s_per_chip'])
  assert guess['img_per_s_per_chip'] == pytest.approx(32 / guess['step_s'])
  assert guess['train_steps'] == 8 and guess['train_hours'] == pytest.approx(
      8 * guess['step_s'] / 3600)
  # The FLOPs are per chip: 4 times the images per chip, 4 times the FLOPs.
  config.batch_size = 512
  larger = aot.compile_job(config, 'v5e-4', eval_step=False)
  assert larger['train']['flops'] / report['train']['flops'] == pytest.approx(4, rel=0.1)
  assert 'ESTIMATE' in aot.report_text(report)
  # The tiny config scans its blocks: XLA's count of a loop is its body's, and the report says so.
  assert guess['undercounted'] and 'TOO LOW' in aot.report_text(report)
  # libtpu's settings are gone again: a process that trains next is no TPU pod.
  assert not {'TPU_WORKER_HOSTNAMES', 'TPU_ACCELERATOR_TYPE'} & set(os.environ)


@needs_libtpu
def test_tpu_batch_that_cannot_fit_is_reported(optimized):
  done = run_aot(f'--config={TINY_CONFIG}', '--topology=v5e-4', '--config.model.dtype=bfloat16',
                 '--config.dataset.name=synthetic', '--config.dataset.image_size=299',
                 '--config.batch_size=65536', '--json')
  assert done.returncode == 1, done.stderr
  report = json.loads(done.stdout)
  assert not report['fits'] and report['out_of_memory']
  assert report['required_bytes'] > report['available_bytes'] == aot.CHIPS['v5e'].hbm_gib * GIB
  assert report['spare_bytes'] < 0
  text = aot.report_text(report)
  assert 'does not fit by' in text and 'RESOURCE_EXHAUSTED' in text
  assert 'libtpu' not in done.stderr  # its start-up warnings are kept quiet


def test_search_on_cpu_devices_against_a_small_memory():
  """The real search, compiling: the answer fits and the next step does not."""
  config = tiny_config(batch_size=16, eval_batch_size=16)
  where = aot.target('cpu:1')
  probe = aot.compile_job(config, where, eval_step=False)
  # Room for about 40 images per chip more than 16.
  per_image = probe['train']['temp_bytes'] / 16
  where.memory_bytes = probe['peak_bytes'] + 40 * per_image
  report = aot.find_max_batch(config, where, batch_step=8)
  best = report['per_chip_batch']
  assert best % 8 == 0 and report['searched'][str(best)]
  assert report['fits'] or report['eval']['total_bytes'] > report['train']['total_bytes']
  assert str(best + 8) in report['searched'] and not report['searched'][str(best + 8)]
  assert np.all([v for k, v in report['searched'].items() if int(k) <= best])
