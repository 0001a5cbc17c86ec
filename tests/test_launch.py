"""The launch scripts that run on one machine: the residual-scaling study."""

import json
import os
import subprocess

from train_utils import ROOT, environment

TINY = ['--config.model.depth_multiplier=0.125', '--config.num_train_steps=2',
        '--config.log_every_steps=1', '--config.eval_every_steps=2',
        '--config.checkpoint_every_steps=2']


def test_residual_scaling_study_trains_each_scale_and_seed_then_draws_them(tmp_path):
  # From another directory, with a relative output directory; one scale fails (not a number):
  # the others still train and are drawn, and the script ends in failure naming it.
  env = dict(environment(), SCALES='0.1 nan learned', SEEDS='3')
  result = subprocess.run([os.path.join(ROOT, 'launch/residual_scaling.sh'), 'study', *TINY],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
  assert result.returncode == 1, result.stderr[-3000:]
  assert 'the scale must be a finite number' in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      'Failed: scale nan seed 3 (see their output above; rerun to resume).')
  tmp_path = tmp_path / 'study'
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
