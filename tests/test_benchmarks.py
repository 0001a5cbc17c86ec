"""The benchmark scripts run on a tiny configuration and end with well-formed JSON whose figures
agree with each other, with the printed report and with XLA's own FLOP count (no speed is
asserted: speed belongs in benchmarks/, not in tests)."""

import importlib.util
import json
import os
import re
import statistics
import subprocess
import sys

import pytest

from train_utils import ROOT, environment

MODEL = ['--model=inception_resnet_v2', '--depth_multiplier=0.125', '--repeats=1,1,1']
TINY = [*MODEL, '--batch=2', '--image_size=75', '--runs=2', '--iters=1', '--warmup=1', '--json']
KEYS = {'model', 'batch', 'image_size', 'dtype', 'compile_s', 'img_per_s'}


def assert_median(value, runs, digits):
  """`value` is the median of `runs`, each rounded to `digits` decimals as the record holds them."""
  assert runs and value == pytest.approx(statistics.median(runs), abs=1.01 * 10 ** -digits)


@pytest.mark.parametrize('script,step', [('train_step.py', 'train'), ('inference.py', 'inference')])
def test_benchmark_prints_json(script, step, tmp_path):
  result = subprocess.run([sys.executable, f'benchmarks/{script}', *TINY, '--peak_tflops=1',
                           '--compare_diagnostics'],
                          cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(result.stdout.strip().splitlines()[-1])
  assert KEYS <= set(record)
  keys = ('model', 'step', 'batch', 'image_size', 'dtype')
  assert tuple(record[k] for k in keys) == \
      ('inception_resnet_v2', step, 2, 75, 'float32')
  assert record['compile_s'] > 0 and record['img_per_s'] > 0 and len(record['runs_img_per_s']) == 2
  assert_median(record['img_per_s'], record['runs_img_per_s'], 2)
  # Model FLOPs (2 a multiply-accumulate, 3 passes to train) against XLA's count of the compiled
  # step, which adds BatchNorm, activations and the optimizer: a missing factor 2 or 3 fails.
  model_flops = record['model_flops_per_image']
  assert 0.8 < record['xla_flops_per_image'] / model_flops < 1.5, record
  if step == 'train':
    assert model_flops % 3 == 0
  assert record['peak_tflops'] == 1.0
  assert record['mfu'] == pytest.approx(model_flops * record['img_per_s'] / 1e12, abs=6e-5)
  # The printed report says what the record says.
  compile_s, img_per_s, runs = re.search(
      r'compile ([\d.]+) s; ([\d.]+) img/s \(runs ([\d., ]+)\)', result.stdout).groups()
  assert float(compile_s) == pytest.approx(record['compile_s'], abs=0.051)
  assert float(img_per_s) == pytest.approx(record['img_per_s'], abs=0.051)
  assert [float(r) for r in runs.split(', ')] == pytest.approx(record['runs_img_per_s'], abs=0.051)
  mfu = re.search(r'MFU ([\d.]+)% of 1 TFLOP/s', result.stdout).group(1)
  assert float(mfu) == pytest.approx(100 * record['mfu'], abs=0.051)
  assert 'ratio' not in record  # no --compare_timm
  if step == 'train':  # the job's step records the diagnostics; timed beside the step without
    assert record['diagnostics'] == ['dead_fraction', 'dead_channels', 'residual_ratio_35x35',
                                     'residual_ratio_17x17', 'residual_ratio_8x8']
    assert len(record['no_diagnostics_runs_img_per_s']) == 2
    assert record['diagnostics_cost'] == pytest.approx(
        record['no_diagnostics_img_per_s'] / record['img_per_s'] - 1, abs=0.02)
  else:
    assert record['diagnostics'] == [] and 'diagnostics_cost' not in record

  table = subprocess.run([sys.executable, 'benchmarks/table.py'], input=result.stdout, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
  assert len(table) == 3 and table[2].startswith(f'| inception_resnet_v2 | {step} | 2 | 75 |')


def test_train_step_times_a_frozen_step_beside_the_full_one():
  result = subprocess.run([sys.executable, 'benchmarks/train_step.py', *TINY,
                           '--trainable_scopes=Logits'],
                          cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(result.stdout.strip().splitlines()[-1])
  assert record['trainable_scopes'] == 'Logits' and record['frozen_compile_s'] > 0
  assert len(record['frozen_runs_img_per_s']) == 2
  assert_median(record['frozen_img_per_s'], record['frozen_runs_img_per_s'], 2)
  assert record['frozen_speedup'] == pytest.approx(
      record['frozen_img_per_s'] / record['img_per_s'], rel=0.02)
  line = re.search(r'trainable_scopes=Logits: compile [\d.]+ s; ([\d.]+) img/s \(runs [\d., ]+\); '
                   r'([\d.]+)x the full step \(median of the runs\' ratios ([\d.]+)x\)',
                   result.stdout)
  assert line, result.stdout
  assert float(line.group(1)) == pytest.approx(record['frozen_img_per_s'], abs=0.051)
  assert float(line.group(2)) == pytest.approx(record['frozen_speedup'], abs=0.0051)
  assert float(line.group(3)) == pytest.approx(record['frozen_speedup_per_run'], abs=0.0051)


def test_compare_timm_without_torch_names_what_is_missing():
  if all(importlib.util.find_spec(m) for m in ('torch', 'timm')):
    pytest.skip('torch and timm are installed here')
  result = subprocess.run([sys.executable, 'benchmarks/train_step.py', *TINY, '--compare_timm'],
                          cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 2 and '--compare_timm needs torch and timm installed' in result.stderr


def test_compile_time_prints_json():
  result = subprocess.run([sys.executable, 'benchmarks/compile_time.py', *MODEL, '--image_size=75',
                           '--batch=2', '--runs=1', '--modes=scan', '--json'],
                          cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(result.stdout.strip().splitlines()[-1])
  assert (record['model'], record['image_size'], record['batch'], record['mode']) == \
      ('inception_resnet_v2', 75, 2, 'scan')
  assert record['compile_s'] > 0 and len(record['runs_s']) == 1
  assert_median(record['compile_s'], record['runs_s'], 2)
  assert re.search(rf'^scan +{record["compile_s"]:.1f}  {record["runs_s"][0]:.1f}$',
                   result.stdout, re.MULTILINE), result.stdout


def test_input_pipeline_benchmark_prints_json():
  out = subprocess.run([sys.executable, 'benchmarks/input_pipeline.py', '--images=16',
                        '--image_size=64', '--batch=4', '--runs=1', '--json'], cwd=ROOT,
                       capture_output=True, text=True, check=True).stdout
  result = json.loads(out.strip().splitlines()[-1])
  assert result['image_size'] == 64 and result['img_per_sec_per_core'] > 0
  assert result['cores'] == len(os.sched_getaffinity(0))
  assert_median(result['img_per_sec'], result['runs'], 1)
  assert result['img_per_sec_per_core'] == pytest.approx(result['img_per_sec'] / result['cores'],
                                                         abs=0.051)


def test_evaluation_benchmark_prints_json_per_protocol():
  result = subprocess.run([sys.executable, 'benchmarks/evaluate.py', *MODEL, '--image_size=75',
                           '--images=2', '--runs=1', '--protocols=1,10', '--json'],
                          cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  records = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert [(r['model'], r['image_size'], r['dtype'], r['crops'], r['images']) for r in records] == \
      [('inception_resnet_v2', 75, 'float32', protocol, 2) for protocol in (1, 10)]
  for record in records:
    assert record['img_per_s'] > 0 and len(record['runs_img_per_s']) == 1
    assert record['crops_per_s'] == pytest.approx(record['img_per_s'] * record['crops'], rel=1e-3)
    assert record['seconds_per_run'] > 0 and record['host_ms_per_image'] > 0
    assert_median(record['img_per_s'], record['runs_img_per_s'], 3)
    assert_median(record['seconds_per_run'], record['runs_s'], 2)
    # The whole call (loading included): images / seconds; the overhead is its time beyond what
    # the images take at the evaluator's own rate.
    assert record['call_img_per_s'] == pytest.approx(2 / record['seconds_per_run'], rel=0.02)
    assert record['overhead_s'] == pytest.approx(
        record['seconds_per_run'] - 2 / record['img_per_s'], abs=0.011)
  assert records[0]['crop_ms_per_image'] is None and records[1]['crop_ms_per_image'] > 0


def test_table_of_compile_reports():
  """benchmarks/table.py turns `python -m inception_jax.aot --json` records (what
  benchmarks/tpu_table.sh collects) into the fit-and-estimate table."""
  report = subprocess.run([sys.executable, '-m', 'inception_jax.aot',
                           '--config=configs/demo.py:tiny', '--topology=cpu:1', '--json'],
                          cwd=ROOT, env=environment(), capture_output=True, text=True,
                          timeout=600)
  assert report.returncode == 0, report.stderr
  record = json.loads(report.stdout)
  estimated = dict(record, topology='v5e-4', chips=4, estimate={
      'flops_per_image': 2e9, 'step_s': 0.05, 'bound': 'memory', 'img_per_s_per_chip': 80.0,
      'img_per_s': 320.0, 'train_hours': 1.25, 'epochs': 160.0})
  lines = '\n'.join(json.dumps(r) for r in (record, estimated))
  table = subprocess.run([sys.executable, 'benchmarks/table.py'], input=lines, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
  assert len(table) == 4 and table[0].startswith('| model | slice | batch per chip |')
  assert table[2].startswith('| inception_resnet_v2 (float32, scan) | cpu:1 (1 chips) | 16 |')
  assert table[2].endswith('| n/a | n/a (n/a) | n/a | n/a | n/a (n/a) |')  # no CPU estimate
  assert table[3].endswith('| 2.0 | 50 (memory) | 80 | 320 | 1.2 (160) |')


def test_tpu_table_without_an_output_directory_prints_its_usage():
  result = subprocess.run(['benchmarks/tpu_table.sh'], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
  assert result.returncode == 2 and 'benchmarks/tpu_table.sh OUTDIR' in result.stdout


def test_init_time_prints_json_for_cold_and_warm_caches():
  result = subprocess.run([sys.executable, 'benchmarks/init_time.py', *MODEL, '--size=75',
                           '--runs=1', '--modes=jit+scan', '--json'],
                          cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(result.stdout.strip().splitlines()[-1])
  assert (record['model'], record['size'], record['mode']) == (
      'inception_resnet_v2', 75, 'jit+scan')
  assert record['cold_s'] > 0 and record['warm_s'] > 0
  assert len(record['runs_cold_s']) == len(record['runs_warm_s']) == 1
  assert_median(record['cold_s'], record['runs_cold_s'], 2)
  assert_median(record['warm_s'], record['runs_warm_s'], 2)


def test_gpu_speed_variants_run_one_by_one_and_label_their_json(tmp_path):
  """benchmarks/gpu.sh's SPEED mode (issue 18), dry-run on the CPU with a tiny network: each
  variant's flags reach its process and its JSON line is labelled."""
  tiny = ' '.join([*TINY, '--dtype=float32'])
  result = subprocess.run(['bash', 'benchmarks/gpu.sh', str(tmp_path)], cwd=ROOT,
                          env=dict(environment(), SPEED='1', VARIANTS='cmdbuf folded',
                                   PYTHON=sys.executable, EXTRA_ARGS=tiny),
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert '== cmdbuf: inception_resnet_v2 XLA_FLAGS=--xla_gpu_enable_command_buffer' in result.stdout
  records = [json.loads(line) for line in (tmp_path / 'speed.jsonl').read_text().splitlines()]
  assert [r['variant'] for r in records] == ['cmdbuf', 'folded']
  assert '--xla_gpu_enable_command_buffer=FUSION' in records[0]['xla_flags']
  assert [r['bn_folded'] for r in records] == [False, True]
  assert all(r['layout'] == 'unrolled' and r['img_per_s'] > 0 for r in records)
  bad = subprocess.run(['bash', 'benchmarks/gpu.sh', str(tmp_path)], cwd=ROOT,
                       env=dict(environment(), SPEED='1', VARIANTS='warp9'), capture_output=True,
                       text=True, timeout=60)
  assert bad.returncode == 2 and 'unknown variant warp9' in bad.stderr


def test_input_pipeline_benchmark_streams_prepared_data_from_disk_and_a_bucket(tmp_path):
  """--data_dir: the job's stream of fake ImageNet prepared on disk and, with --emulate, from a
  bucket (fake-gcs-server behind the delaying proxy) at each latency, with either reader."""
  result = subprocess.run(
      [sys.executable, 'benchmarks/input_pipeline.py', f'--data_dir={tmp_path}', '--make_data',
       '--images=24', '--shards=2', '--emulate', '--latency_ms=0,10',
       '--readers=batched,one_by_one', '--batch=4', '--steps=1', '--runs=1', '--image_size=64',
       '--json'], cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(result.stdout.strip().splitlines()[-1])
  assert [(s['bucket'], s['reader'], s['latency_ms']) for s in record['streams']] == [
      (False, 'batched', None), (False, 'one_by_one', None), (True, 'batched', 0),
      (True, 'batched', 10), (True, 'one_by_one', 0), (True, 'one_by_one', 10)]
  assert all(s['img_per_sec'] > 0 for s in record['streams'])
  for stream in record['streams']:
    assert_median(stream['img_per_sec'], stream['runs'], 1)
  local = {s['reader']: s['img_per_sec'] for s in record['streams'] if not s['bucket']}
  for s in record['streams'][2:]:
    assert record['bucket_over_local'][f'{s["reader"]}@{s["latency_ms"]:g}ms'] == pytest.approx(
        s['img_per_sec'] / local[s['reader']], abs=6e-4)
  assert set(record['bucket_over_local']) == {'batched@0ms', 'batched@10ms', 'one_by_one@0ms',
                                              'one_by_one@10ms'}
