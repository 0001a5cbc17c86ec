"""The package as a released one is used: a wheel built from this checkout (`python -m build
--wheel`), installed, not editable, in a fresh virtual environment, and run from a directory outside
the clone that has no configs/ folder: the Python API, its data files, the demo trained by config
name, then `inception_jax.evaluate` and `inception_jax.predict` on its workdir.

To stay affordable the environment reuses this one's third-party packages (`--system-site-packages`,
the wheel installed with `--no-deps`). Those site-packages may hold an editable install of a
checkout (a .pth file and a finder in `sys.meta_path`), so the test checks where every module of
`inception_jax` and every config resolves from: the wheel's copy, in the new environment.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from train_utils import ROOT, environment

pytestmark = pytest.mark.slow

# Files of the wheel besides the package's modules (setup.py's package_data).
DATA = {'inception_jax/imagenet_classes.tsv', 'inception_jax/weights/timm_layouts.json.gz'}

# Run by the environment's Python in the user's directory: prints one JSON record last.
API = r'''
import importlib.util, json, os, pkgutil, sys

import inception_jax  # first: its XLA settings apply from JAX's start
from absl import flags
import jax
import jax.numpy as jnp

from inception_jax import config_flag, configs, imagenet
from inception_jax.models import create
from inception_jax.steps import options_from_config
from inception_jax.weights import timm

# README's Models section, on the tiny demo's network.
config = configs.get('demo:tiny')
model = create(config.model.name, **options_from_config(config, num_classes=10))
images = jnp.zeros((2, 16, 16, 3))
variables = jax.jit(model.init, static_argnames='train')(jax.random.key(0), images[:1], train=False)
logits = jax.jit(model.apply, static_argnames='train')(variables, images, train=False)

forms = {}
for value in ('demo:tiny', 'configs/demo.py:tiny', 'irv2', 'finetune:iv3'):
  argv = ['prog', f'--config={value}']
  holder = flags.FlagValues()
  config_flag.define('config', flag_values=holder, sys_argv=argv)
  holder(argv)
  forms[value] = [holder.config.model.name, holder.config.num_train_steps]
try:
  config_flag.module('nothere')
except FileNotFoundError as e:
  unknown = str(e)

# Where every module of the package would be imported from, without running them (walk_packages
# imports the subpackages to list them).
origins = {'inception_jax': inception_jax.__file__}
for info in pkgutil.walk_packages(inception_jax.__path__, 'inception_jax.'):
  origins[info.name] = importlib.util.find_spec(info.name).origin
origins.update({name: module.__file__ for name, module in sys.modules.items()
                if name.startswith('inception_jax.') and getattr(module, '__file__', None)})
print(json.dumps(dict(
    origins=origins, configs_path=list(configs.__path__), config_names=configs.names(),
    top_level_configs=importlib.util.find_spec('configs') is not None,
    meta_path=[repr(finder) for finder in sys.meta_path], logits=list(logits.shape),
    classes=imagenet.short_names()[:2], class_count=len(imagenet.short_names()),
    layout=len(timm.timm_layout('inception_v3')), forms=forms, unknown=unknown,
    cwd=os.getcwd(), cwd_entries=sorted(os.listdir('.')))))
'''


def ignored(directory, names):
  """What the copy of the checkout leaves out: git's and the tools' files (.gitignore)."""
  skip = {n for n in names
          if n in ('.git', '__pycache__', '.pytest_cache') or n.endswith('.egg-info')}
  if os.path.samefile(directory, ROOT):
    skip |= {n for n in names if n in ('build', 'dist')
             or n.startswith('workdir') and os.path.isdir(os.path.join(directory, n))}
  return skip


@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
  """The wheel, built from a copy of the checkout (a build writes build/ and *.egg-info/ beside
  setup.py)."""
  pytest.importorskip('build', reason='python -m build makes the wheel: pip install -e ".[test]"')
  root = tmp_path_factory.mktemp('wheel')
  source, dist = root / 'source', root / 'dist'
  shutil.copytree(ROOT, source, ignore=ignored)
  result = subprocess.run([sys.executable, '-m', 'build', '--wheel', '--outdir', str(dist),
                           str(source)], capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  [path] = dist.glob('inception_jax-*.whl')
  return path


@pytest.fixture(scope='module')
def installed(wheel, tmp_path_factory):
  """(the environment's Python, its site-packages, run: a command of it in the user's directory,
  an empty one outside the clone)."""
  root = tmp_path_factory.mktemp('installed')
  env_dir, user = root / 'venv', root / 'user'
  user.mkdir()
  assert not str(user.resolve()).startswith(os.path.realpath(ROOT) + os.sep)
  subprocess.run([sys.executable, '-m', 'venv', '--system-site-packages', '--without-pip',
                  str(env_dir)], check=True, timeout=120)
  python = str(env_dir / 'bin' / 'python')
  env = environment()
  env.pop('PYTHONPATH', None)  # nothing of the clone on the path
  env['PYTHONNOUSERSITE'] = '1'
  # The outer environment's pip, which installs into the new one's prefix.
  subprocess.run([python, '-m', 'pip', 'install', '-q', '--no-deps', '--no-index',
                  '--disable-pip-version-check', str(wheel)], check=True, env=env, timeout=300)
  site = subprocess.run([python, '-c', 'import sysconfig; print(sysconfig.get_path("purelib"))'],
                        check=True, env=env, capture_output=True, text=True).stdout.strip()

  def run(*args, timeout=600):
    return subprocess.run([python, *args], cwd=user, env=env, capture_output=True, text=True,
                          timeout=timeout)
  return python, os.path.realpath(site), run


def test_the_wheel_holds_the_package_its_data_and_configs_only(wheel):
  names = set(zipfile.ZipFile(wheel).namelist())
  configs = {f'inception_jax/configs/{f}' for f in os.listdir(os.path.join(ROOT, 'configs'))
             if f.endswith('.py')}
  modules = {os.path.relpath(os.path.join(d, f), ROOT)
             for d, _, files in os.walk(os.path.join(ROOT, 'inception_jax'))
             for f in files if f.endswith('.py')}
  assert DATA | configs | modules <= names, sorted((DATA | configs | modules) - names)
  # Nothing of the repository's other folders (tests/, notebooks/, benchmarks/, launch/), and no
  # top-level package but inception_jax.
  outside = {n for n in names if not n.startswith(('inception_jax/', 'inception_jax-'))}
  assert not outside, sorted(outside)
  packaged = {n.split('/')[1] for n in names if n.count('/') >= 2 and n.startswith('inception_')}
  assert not packaged & {'tests', 'notebooks', 'benchmarks', 'launch'}


def test_python_api_and_configs_come_from_the_wheel(installed):
  _, site, run = installed
  result = run('-c', API)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  # Every module and config from the wheel's copy, not the clone nor an editable install.
  inside = {name: origin for name, origin in report['origins'].items()
            if os.path.realpath(origin).startswith(site + os.sep)}
  assert inside == report['origins'], report['meta_path']
  assert 'inception_jax.main' in inside and 'inception_jax.configs.demo' in inside
  assert [os.path.realpath(p) for p in report['configs_path']] == [
      os.path.join(site, 'inception_jax', 'configs')]
  assert not report['top_level_configs'] and 'configs' not in report['cwd_entries']
  assert not os.path.realpath(report['cwd']).startswith(os.path.realpath(ROOT))
  # The package data: class names and timm's layouts.
  assert report['class_count'] == 1000 and report['classes'] == ['tench', 'goldfish']
  assert report['layout'] > 0
  assert report['logits'] == [2, 10]
  assert report['forms'] == {'demo:tiny': ['inception_resnet_v2', 8],
                             'configs/demo.py:tiny': ['inception_resnet_v2', 8],
                             'irv2': ['inception_resnet_v2', None],
                             'finetune:iv3': ['inception_v3', None]}
  assert 'cifar10, default, demo, finetune' in report['unknown']
  assert report['config_names'] == sorted(f[:-3] for f in os.listdir(os.path.join(ROOT, 'configs'))
                                          if f.endswith('.py') and f != '__init__.py')


def test_demo_by_name_then_evaluate_and_predict(installed, tmp_path):
  _, _, run = installed
  workdir = tmp_path / 'tiny'
  result = run('-m', 'inception_jax.main', '--config=demo:tiny', f'--workdir={workdir}')
  assert result.returncode == 0, result.stderr[-3000:]
  logged = [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]
  assert any(r.get('step') == 8 and 'eval_top1' in r for r in logged), logged[-3:]

  result = run('-m', 'inception_jax.evaluate', f'--checkpoint={workdir}', '--crops=1', '--json')
  assert result.returncode == 0, result.stderr[-3000:]
  [record] = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{')]
  assert record['crops'] == 1 and record['images'] == 297

  from inception_jax import tf_import
  from inception_jax.data import digits
  tf = tf_import.tensorflow()
  images, labels = digits.load(16)
  image = str(tmp_path / f'digit{labels[0]}.png')
  tf.io.write_file(image, tf.io.encode_png(images[0]))
  result = run('-m', 'inception_jax.predict', f'--checkpoint={workdir}', '--top=3', image)
  assert result.returncode == 0, result.stderr[-3000:]
  lines = result.stdout.splitlines()
  assert lines[0] == image and len(lines) == 4
  assert {line.split()[-1] for line in lines[1:]} <= {str(d) for d in range(10)}
