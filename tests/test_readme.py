"""The README stays true: its Quickstart has the two commands CI and users run, and its Layout
names every module."""

import os
import re

from train_utils import ROOT


def readme():
  with open(os.path.join(ROOT, 'README.md')) as f:
    return f.read()


def test_quickstart_has_the_two_commands():
  text = readme()
  assert text.split('\n## ')[1].startswith('Quickstart')
  block = re.search(r'```bash\n(.*?)```', text, re.DOTALL)[1]
  commands = block.strip().splitlines()
  assert len(commands) == 2
  assert commands[0].startswith('pip install -e . && python -m inception_jax.main --config=')
  with open(os.path.join(ROOT, '.ci', 'run')) as f:
    ci = f.read()
  assert commands[1].split(' && ')[1].split()[:3] == ['python', '-m', 'pytest']
  assert 'python -m pytest -q -n 2' in ci and '-n 2' in commands[1]


def test_layout_names_every_module_config_and_launcher():
  layout = readme().split('## Layout', 1)[1]
  # configs/iv3.py etc. appear as "an alias per model"
  aliases = {f'{arg}.py' for arg in ('iv3', 'iv4', 'irv1', 'irv2', 'irv2_paper')}
  missing = [os.path.join(root, file)
             for directory in ('inception_jax', 'configs', 'launch')
             for root, _, files in os.walk(os.path.join(ROOT, directory))
             for file in files
             if file.endswith(('.py', '.sh', '.sbatch')) and file != '__init__.py'
             and not (directory == 'configs' and file in aliases)
             and not re.search(rf'\b{re.escape(file.rsplit(".", 1)[0])}\b', layout)]
  assert not missing, f"README.md's Layout does not name {missing}"
