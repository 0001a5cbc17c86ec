"""The launch scripts that run on one machine: the residual-scaling study."""

import json
import os
import subprocess

from train_utils import ROOT, environment

TINY = ['--config.model.depth_multiplier=0.125', '--config.num_train_steps=2',
        '--config.log_every_steps=1', '--config.eval_every_steps=2',
        '--config.checkpoint_every_steps=2']


def test_residual_scaling_study_trains_each_scale_and_seed_then_draws_them(tmp_path):
  env = dict(environment(), SCALES='0.1 learned', SEEDS='3')
  result = subprocess.run(['launch/residual_scaling.sh', str(tmp_path), *TINY], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-3000:]
  assert sorted(os.listdir(tmp_path)) == ['residual_scaling.png', 'scale_0.1_seed_3',
                                          'scale_learned_seed_3']
  for name, learned in (('scale_0.1_seed_3', False), ('scale_learned_seed_3', True)):
    with open(tmp_path / name / 'model.json') as f:
      options = json.load(f)['options']
    assert options.get('learn_residual_scale', False) is learned
    with open(tmp_path / name / 'metrics.jsonl') as f:
      rows = [json.loads(line) for line in f]
    assert [r['step'] for r in rows if 'dead_fraction' in r] == [1, 2]
  assert (tmp_path / 'residual_scaling.png').read_bytes().startswith(b'\x89PNG')


def test_residual_scaling_study_without_an_output_directory_prints_its_usage():
  result = subprocess.run(['launch/residual_scaling.sh'], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
  assert result.returncode == 2 and 'launch/residual_scaling.sh OUTDIR' in result.stdout
