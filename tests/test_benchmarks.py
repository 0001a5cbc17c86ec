"""The benchmark scripts run on a tiny configuration and end with well-formed JSON (no timings are
asserted: speed belongs in benchmarks/, not in tests)."""

import importlib.util
import json
import subprocess
import sys

import pytest

from train_utils import ROOT, environment

TINY = ['--model=inception_resnet_v2', '--batch=2', '--image-size=75', '--depth-multiplier=0.125',
        '--repeats=1,1,1', '--runs=2', '--iters=1', '--warmup=1', '--json']
KEYS = {'model', 'batch', 'image_size', 'dtype', 'compile_s', 'img_per_s'}


@pytest.mark.parametrize('script,step', [('train_step.py', 'train'), ('inference.py', 'inference')])
def test_benchmark_prints_json(script, step, tmp_path):
  result = subprocess.run([sys.executable, f'benchmarks/{script}', *TINY, '--peak-tflops=1'],
                          cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(result.stdout.strip().splitlines()[-1])
  assert KEYS <= set(record)
  assert (record['model'], record['step'], record['batch'], record['image_size'], record['dtype']) == \
      ('inception_resnet_v2', step, 2, 75, 'float32')
  assert record['compile_s'] > 0 and record['img_per_s'] > 0 and len(record['runs_img_per_s']) == 2
  assert record['model_flops_per_image'] > 0 and 0 < record['mfu']
  assert 'ratio' not in record  # no --compare-timm

  table = subprocess.run([sys.executable, 'benchmarks/table.py'], input=result.stdout, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.splitlines()
  assert len(table) == 3 and table[2].startswith(f'| inception_resnet_v2 | {step} | 2 | 75 |')


def test_compare_timm_without_torch_names_what_is_missing():
  if all(importlib.util.find_spec(m) for m in ('torch', 'timm')):
    pytest.skip('torch and timm are installed here')
  result = subprocess.run([sys.executable, 'benchmarks/train_step.py', *TINY, '--compare-timm'],
                          cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600)
  assert result.returncode == 2 and '--compare-timm needs torch and timm installed' in result.stderr
