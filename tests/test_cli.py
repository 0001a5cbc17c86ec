"""Every command, `python -m inception_jax.X`, follows `inception_jax.cli`'s convention: its flags
defined on demand, never on import, each listed by its `--help` with its help. The commands are
found by walking the package's files, so that a new one cannot be missed."""

import importlib
import os
import re
import subprocess
import sys

from absl import flags
import pytest

from inception_jax import cli, errors

from train_utils import ROOT, environment

PACKAGE = os.path.join(ROOT, 'inception_jax')
GUARD = re.compile(r"^if __name__ == '__main__':$", re.MULTILINE)


def commands() -> dict[str, str]:
  """{what `python -m` runs: the module of the command's code} for each module with a `__main__`
  guard and each package's `__main__.py`."""
  found = {}
  for root, _, files in os.walk(PACKAGE):
    for file in sorted(files):
      path = os.path.join(root, file)
      if not file.endswith('.py'):
        continue
      module = os.path.relpath(path, ROOT)[:-len('.py')].replace(os.sep, '.')
      if file == '__main__.py':
        found[module.rsplit('.', 1)[0]] = module
      else:
        with open(path) as f:
          if GUARD.search(f.read()):
            found[module] = module
  return found


COMMANDS = commands()


def defined_flags(module: str) -> dict[str, str]:
  """{flag name: help} of the flags that `module`'s define_flags defines."""
  values = flags.FlagValues()
  importlib.import_module(module).define_flags(values)
  return {name: values[name].help for name in values}


def test_the_walk_finds_the_commands():
  assert {'inception_jax.main', 'inception_jax.evaluate', 'inception_jax.predict',
          'inception_jax.convert', 'inception_jax.plot', 'inception_jax.prepare',
          'inception_jax.models', 'inception_jax.aot'} <= set(COMMANDS)


@pytest.mark.parametrize('command', sorted(COMMANDS))
def test_each_command_defines_its_flags_on_demand_and_runs_by_cli(command):
  module = COMMANDS[command]
  with open(os.path.join(ROOT, *module.split('.')) + '.py') as f:
    source = f.read()
  guard = GUARD.search(source)
  assert guard and 'cli.run(define_flags, main)' in source[guard.end():], (
      f'{module} does not end in `cli.run(define_flags, main)` under its __main__ guard')
  assert 'argparse' not in source, f'{module} uses argparse: absl flags only (inception_jax.cli)'
  importlib.import_module(module)
  assert not flags.FLAGS.flags_by_module_dict().get(module), (
      f'{module} defines flags on import: define them in define_flags (inception_jax.cli)')
  helps = defined_flags(module)
  assert helps, f'{module} defines no flags'
  assert all(h and h.strip() for h in helps.values()), f'{module}: a flag without help: {helps}'


def test_help_lists_every_flag_with_its_help():
  started = {c: subprocess.Popen([sys.executable, '-m', c, '--help'], cwd=ROOT,
                                 env=environment(), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
             for c in sorted(COMMANDS)}
  outputs = {c: p.communicate(timeout=300)[0] for c, p in started.items()}
  wrong = []
  for command, process in started.items():
    output = outputs[command]
    if process.returncode != 0:
      wrong.append(f'python -m {command} --help: exit status {process.returncode}\n{output}')
      continue
    if not output.split('\nflags:\n', 1)[0].strip():
      wrong.append(f'python -m {command} --help shows no usage (its module\'s docstring)')
    listed = dict(re.findall(r'^\s+--(?:\[no\])?(\w+): (.*)$', output, re.MULTILINE))
    for name, help_text in defined_flags(COMMANDS[command]).items():
      first = help_text.split()[0]
      if not listed.get(name, '').startswith(first):
        wrong.append(f'python -m {command} --help does not list --{name} with its help '
                     f'({help_text!r})')
  assert not wrong, '\n\n'.join(wrong)


@pytest.mark.quick
def test_call_runs_a_command_here_and_fails_as_the_command_does(capsys):
  from inception_jax import prepare
  with pytest.raises(SystemExit) as exit_:
    cli.call(prepare, ['mnist', '--data_dir=unused'])
  assert exit_.value.code == errors.EXIT_STATUS
  assert capsys.readouterr().err.startswith("error: 'mnist' is not a dataset to prepare")
  with pytest.raises(SystemExit) as exit_:
    cli.call(prepare, ['cifar10'])  # --data_dir is required
  assert exit_.value.code == errors.EXIT_STATUS
  assert '--data_dir must have a value' in capsys.readouterr().err
