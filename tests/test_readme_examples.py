"""Every fenced code block of README.md is checked by a test: `CHECKS` says which, keyed by the
heading a block sits under and its first line. A block that `CHECKS` does not name fails
`test_every_readme_block_is_checked`, and an entry whose block is gone fails too.

Python blocks run in a fresh process; shell commands run where they can, on tiny settings, with
every change to the README's text a visible (old, new) replacement that must match (`substitute`).
Commands that cannot run here (a real TPU, gcloud, ImageNet, the whole test suite) are checked
instead: every `--flag` is one that the program's `--help` lists, every `--config.FIELD=VALUE`
parses into the config the command names, and every `pip install` extra is one of setup.py's."""

import ast
import dataclasses
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest

from test_weights import random_variables, write_slim_checkpoint
from train_utils import ROOT, environment, metrics, setup_py, write_image_folder


@dataclasses.dataclass(frozen=True)
class Block:
  section: str  # the heading it sits under, with its #s: '## Models'
  lang: str  # 'python', 'bash' or '' (none)
  text: str
  line: int  # of the opening fence, counted from 1

  @property
  def key(self):
    return self.section, self.text.splitlines()[0] if self.text else ''


def readme():
  with open(os.path.join(ROOT, 'README.md')) as f:
    return f.read()


def blocks(text=None) -> list[Block]:
  """README.md's fenced code blocks, in order."""
  found, section, fence = [], '', None
  for number, line in enumerate((text or readme()).splitlines(), 1):
    if fence is None:
      if re.match(r'#{1,6} ', line):
        section = line.strip()
      elif match := re.match(r'```(\S*)\s*$', line):
        fence, lang, start, lines = line[:3], match[1], number, []
    elif line.strip() == fence:
      found.append(Block(section, lang, '\n'.join(lines) + '\n', start))
      fence = None
    else:
      lines.append(line)
  assert fence is None, f'README.md: the block opened at line {start} is never closed'
  return found


# The blocks, by (heading, first line): the keys of CHECKS and what the tests look up.
QUICKSTART = ('## Quickstart', 'pip install -e . && python -m inception_jax.main '
              '--config=configs/demo.py --workdir=/tmp/inception_demo')
MODELS = ('## Models', 'import jax, jax.numpy as jnp')
TRAINING = ('## Training', 'python -m inception_jax.main --config=configs/irv2.py '
            '--workdir=/path/to/workdir \\')
AOT = ('## Cloud TPU', 'pip install -e ".[tpu]"')
AOT_REPORT = ('## Cloud TPU', 'inception_resnet_v2 (bfloat16, unrolled) on v5e-16 (JAX topology '
              'v5e:4x4: 16 chips (TPU v5 lite), 4 host(s)): global batch 1024 = 64 per chip, eval '
              'batch 1024, 299x299 images')
TPU_POD = ('## Cloud TPU', 'launch/tpu_pod.sh --spot irv2 us-east5-a v5e-64 configs/irv2.py '
           'gs://BUCKET/irv2 \\')
PRETRAINED = ('## Pretrained weights',
              '# timm: huggingface.co/timm/inception_resnet_v2.tf_in1k/model.safetensors')
DEPLOYING = ('## Deploying', 'pip install -e ".[export]"  # jax2onnx for ONNX; LiteRT, '
             'onnxruntime: runtimes to check them')
RESIDUAL_SCALING = ('## Residual scaling', 'launch/residual_scaling.sh /tmp/residual_scaling     '
                    '# SCALES="1.0 0.3 0.1 learned" SEEDS="0 1"')
LAYOUT = ('## Layout', 'inception_jax/main.py        the training job (absl flags, ml_collections '
          'config)')

# How each block is checked: the tests (of this file unless named `file::test`) and what they
# leave out. Every command of every block also goes through
# test_every_readme_command_passes_flags_its_program_defines and test_pip_extras_exist_in_setup_py.
CHECKS = {
    QUICKSTART: 'test_quickstart_trains_the_demo: the first command, on configs/demo.py:tiny. '
                'Not run: the pip installs (their extras are checked) and the whole test suite '
                '(this is it).',
    MODELS: 'test_models_example_runs: the block, on a narrow network and 75x75 images.',
    TRAINING: 'test_config_overrides_name_fields_of_the_config: not run, it needs ImageNet '
              'prepared; its flags and config overrides are checked.',
    AOT: 'test_aot_on_cpu_devices_runs: the cpu:8 command, on configs/demo.py:tiny. Not run: the '
         'TPU slices (about 10 minutes of compiling each on 2 cores; test_aot.py compiles for one '
         'on a tiny config); their flags and config overrides are checked.',
    AOT_REPORT: 'test_aot_report_sample_adds_up: the output of the v5e-16 command above, not a '
                'command (its figures are checked against each other; test_aot.py compiles for '
                "a v5e slice and checks the report's figures).",
    TPU_POD: 'test_tpu_pod_dry_run_prints_the_flow: the command with --dry_run --skip_check (no '
             'gcloud, TPU or bucket here; test_launch.py and test_rehearsal.py run it against a '
             'stand-in gcloud).',
    PRETRAINED: 'test_pretrained_weights_commands_run: every command, on files the test writes in '
                "the public files' layouts with random values (they cannot be downloaded here), "
                'the fine-tuning at 75x75 for one epoch of a small image folder.',
    DEPLOYING: 'test_deploying_commands_export_what_the_prose_loads: the formats, the checkpoint '
               "and the loading lines' files and signatures. The export command runs as written "
               "(but its paths) in test_export.py's fixture `exported` on a tiny trained network, "
               'whose outputs test_export.py::test_every_format_has_its_record and the parity '
               'tests check; the pip install is not run (its extra is checked).',
    RESIDUAL_SCALING: 'test_residual_scaling_study_command: the script, its output directory and '
                      'the variables of its comment; test_launch.py::test_residual_scaling_study_'
                      'trains_each_scale_and_seed_then_draws_them runs it on tiny settings (the '
                      "README's 8 runs take 47 minutes).",
    LAYOUT: 'test_layout_paths_exist, and test_readme.py::test_layout_names_every_module_config_'
            'and_launcher.',
}


def block(key) -> Block:
  found = [b for b in blocks() if b.key == key]
  assert found, (f'README.md has no block under {key[0]!r} starting {key[1]!r} any more: update '
                 f'{__file__} (CHECKS and its test)')
  return found[0]


def substitute(text, replacements):
  """`text` with each (old, new[, count]) replacement applied, in order; each must match exactly
  `count` (1) times, so that an edit of the README cannot skip one silently."""
  for old, new, *count in replacements:
    expected = count[0] if count else 1
    assert text.count(old) == expected, (
        f'{old!r} occurs {text.count(old)} times in the README block, not {expected}: the README '
        f'changed, update the replacement in {__file__}\n{text}')
    text = text.replace(old, new)
  return text


def commands(text) -> list[list[str]]:
  """The shell commands of a block: continued lines joined, comments dropped, `&&` split."""
  found = []
  for line in text.replace('\\\n', ' ').splitlines():
    words = shlex.split(line, comments=True)
    while words:
      end = words.index('&&') if '&&' in words else len(words)
      found.append(words[:end])
      words = words[end + 1:]
  return found


def shell_blocks():
  return [b for b in blocks() if b.lang in ('bash', 'sh', 'shell', '') and b.key != AOT_REPORT
          and b.key != LAYOUT]


def run(words, timeout=600, **kwargs):
  """A README command line, `python` being this interpreter, from the repository root."""
  if words[0] == 'python':
    words = [sys.executable, *words[1:]]
  kwargs.setdefault('cwd', ROOT)
  kwargs.setdefault('env', environment())
  return subprocess.run(words, capture_output=True, text=True, timeout=timeout, **kwargs)


# The table.


def test_readme_blocks_parse_with_their_headings():
  found = blocks('# T\n\n## A\n\n```python\nx = 1\n\ny = 2\n```\n### B\n```\n$ ls\n```\n')
  assert found == [Block('## A', 'python', 'x = 1\n\ny = 2\n', 5), Block('### B', '', '$ ls\n', 11)]
  assert commands('a --x=1 \\\n  --y=2  # a comment\npip install -e . && python -m m\n') == [
      ['a', '--x=1', '--y=2'], ['pip', 'install', '-e', '.'], ['python', '-m', 'm']]
  assert len(blocks()) >= len(CHECKS)


def test_every_readme_block_is_checked():
  unchecked = [f'README block under {b.section!r} starting {b.key[1]!r} (line {b.line}) is not '
               f'checked by any test: add it to CHECKS in {__file__} with the test that checks it'
               for b in blocks() if b.key not in CHECKS]
  assert not unchecked, '\n'.join(unchecked)


def test_every_check_names_a_readme_block_and_a_test():
  keys = {b.key for b in blocks()}
  gone = [f'CHECKS names a block under {k[0]!r} starting {k[1]!r} that README.md no longer has: '
          'update the key (and its test) or remove the entry' for k in CHECKS if k not in keys]
  assert not gone, '\n'.join(gone)
  for key, how in CHECKS.items():
    tests = re.findall(r'(?:(test_\w+\.py)::)?(test_\w+)(?!\w|\.py)', how)
    assert tests or how.startswith('not run: '), key
    for file, test in tests:
      if file:
        with open(os.path.join(ROOT, 'tests', file)) as f:
          assert re.search(rf'^def {test}\(', f.read(), re.MULTILINE), f'{file}::{test}'
      else:
        assert callable(globals().get(test)), f'{test} is not a test of {__file__}'


# Shell commands: flags, config overrides, pip extras.


def help_flags(modules):
  """The flags that each program lists: argparse's --help, or absl's --helpfull (its --help lists
  only the flags that the program's own module defines)."""

  def outputs(modules, option):
    started = {m: subprocess.Popen([sys.executable, '-m', m, option], cwd=ROOT, env=environment(),
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for m in modules}
    found = {m: p.communicate(timeout=120)[0] for m, p in started.items()}
    for module, process in started.items():
      # absl's help exits with status 1, argparse's with 0.
      assert process.returncode in (0, 1), f'python -m {module} {option}:\n{found[module]}'
    return found

  texts = outputs(modules, '--help')
  texts.update(outputs([m for m, text in texts.items() if 'Try --helpfull' in text], '--helpfull'))
  defined = {}
  for module, output in texts.items():
    listing = re.split(r'^(?:flags|options|optional arguments):$', output, maxsplit=1,
                       flags=re.MULTILINE)
    assert len(listing) == 2, f'python -m {module} --help lists no flags:\n{output}'
    defined[module] = set(re.findall(r'^\s+(?:-\w, )?--(?:\[no\])?([\w-]+)', listing[1],
                                     re.MULTILINE))
  return defined


def program_commands():
  """(where, module, words) of every `python -m inception_jax.X` command of README.md: of each
  fenced shell block, and each inline `python -m inception_jax...` of the prose."""
  found = []
  for b in shell_blocks():
    for words in commands(b.text):
      if words[:2] == ['python', '-m'] and words[2].startswith('inception_jax'):
        found.append((f'README block under {b.section!r} (line {b.line})', words[2], words[3:]))
  prose = re.sub(r'```.*?```', '', readme(), flags=re.DOTALL)
  for match in re.finditer(r'`python -m (inception_jax[\w.]*)([^`]*)`', prose):
    found.append((f'README: `{match[0][1:-1]}`', match[1], match[2].split()))
  return found


def test_every_readme_command_passes_flags_its_program_defines():
  found = program_commands()
  defined = help_flags(sorted({module for _, module, _ in found}))
  wrong = []
  for where, module, words in found:
    for flag in re.findall(r'(?<![\w-])--([\w-]+)', ' '.join(words)):
      if flag not in defined[module] and not flag.startswith('config.'):
        wrong.append(f'{where}: python -m {module} has no flag --{flag}')
  assert not wrong, '\n'.join(wrong)


def parse_config(*words):
  """The config that `--config=FILE[:ARG]` with `--config.FIELD=VALUE` overrides give, parsed as
  the programs parse them (ml_collections' config flag): an unknown field or a value of the wrong
  type raises."""
  from absl import flags
  values = flags.FlagValues()
  argv = ['readme', *words]
  try:  # the programs' own --config flag, where there is one (configs by name, or by file)
    from inception_jax import config_flag
  except ImportError:
    from ml_collections import config_flags
    config_flags.DEFINE_config_file('config', None, flag_values=values, lock_config=True,
                                    sys_argv=argv)
  else:
    config_flag.define('config', flag_values=values, sys_argv=argv)
  values(argv)
  return values.config


def config_commands():
  """(where, [--config=..., --config.X=...]) of every README command that names a config."""
  found = []
  for b in shell_blocks():
    for words in commands(b.text):
      config = [w for w in words if w.startswith('--config=')]
      if words[0] == 'launch/tpu_pod.sh':  # NAME ZONE ACCELERATOR CONFIG WORKDIR
        config = [f'--config={w}' for w in words if re.match(r'configs/\w+\.py', w)]
      overrides = [w for w in words if w.startswith('--config.')]
      if config or overrides:
        found.append((f'README block under {b.section!r} (line {b.line}): {shlex.join(words)}',
                      config + overrides))
  return found


# ml_collections loads config files with importlib's deprecated load_module.
@pytest.mark.filterwarnings('ignore:the load_module:DeprecationWarning')
def test_config_overrides_name_fields_of_the_config(monkeypatch):
  monkeypatch.chdir(ROOT)  # the configs' paths are relative to it, as in the README
  found = config_commands()
  assert len(found) >= 6
  for where, words in found:
    assert words[0].startswith('--config='), f'{where}: overrides without --config'
    try:
      config = parse_config(*words)
    except Exception as e:  # noqa: BLE001 (any failure is the README's to fix)
      pytest.fail(f'{where}: {type(e).__name__}: {e}')
    for word in words[1:]:
      field, value = word.removeprefix('--config.').split('=', 1)
      node = config
      for part in field.split('.'):
        node = node[part]
      assert str(node) == value or node == ast.literal_eval(value), (where, word, node)



def test_inline_config_overrides_name_fields_of_the_recipe():
  """Each `--config.FIELD[=VALUE]` of the README's prose names a field of configs/default.py's
  config, which every config starts from (an error message quoted as such aside)."""
  from configs import default
  config = default.get_config()
  prose = re.sub(r'```.*?```', '', readme(), flags=re.DOTALL)
  spans = [s for s in re.findall(r'`([^`]*)`', prose) if not s.startswith('error:')]
  fields = re.findall(r'(?<![\w-])--config\.([\w.]+)', ' '.join(spans))
  assert len(fields) > 10
  missing = []
  for field in fields:
    node = config
    for part in field.split('.'):
      if part not in node:
        missing.append(field)
        break
      node = node[part]
  assert not missing, f'README.md overrides config fields that configs/default.py lacks: {missing}'


def test_pip_extras_exist_in_setup_py():
  extras = setup_py().EXTRAS_REQUIRE
  installs = [words for b in shell_blocks() for words in commands(b.text)
              if words[:3] == ['pip', 'install', '-e']]
  assert len(installs) >= 3
  for words in installs:
    target = words[3]
    named = re.fullmatch(r'\.(?:\[([\w,]+)\])?', target)
    assert named, f'pip install -e {target}: not this checkout'
    for extra in (named[1] or '').split(',') if named[1] else []:
      assert extra in extras, f'pip install -e {target}: setup.py has no extra {extra!r}'
  # In the prose and tables too (the Install section's lines), and the files they name exist.
  inline = re.findall(r'pip install [^`\n]*?-e "?\.\[([\w,]+)\]', readme())
  assert {'test', 'tpu', 'cuda12'} <= {e for group in inline for e in group.split(',')}, inline
  for group in inline:
    for extra in group.split(','):
      assert extra in extras, f'README: pip install -e ".[{group}]": setup.py has no {extra!r}'
  for path in re.findall(r'pip install [^`\n]*?-[rc] ([\w./-]+)', readme()):
    assert os.path.isfile(os.path.join(ROOT, path)), f'README installs with {path}, not a file'
  # `pytest -n N` needs pytest-xdist, which the test extra installs.
  pytest_commands = [words for b in shell_blocks() for words in commands(b.text)
                     if words[:3] == ['python', '-m', 'pytest']]
  assert pytest_commands
  if any('-n' in words for words in pytest_commands):
    assert 'pytest-xdist' in extras['test']


# The blocks, one by one.


@pytest.mark.slow
def test_quickstart_trains_the_demo(tmp_path):
  """The first command trains the embedded demo; here its tiny variant (8 steps)."""
  text = substitute(block(QUICKSTART).text, [
      ('--config=configs/demo.py ', '--config=configs/demo.py:tiny '),
      ('--workdir=/tmp/inception_demo', f'--workdir={tmp_path}/demo'),
  ])
  install, train, *_ = commands(text)
  assert install == ['pip', 'install', '-e', '.']  # not run: this checkout is what is tested
  done = run(train)
  assert done.returncode == 0, done.stderr[-3000:]
  evaluations = [m for m in metrics(f'{tmp_path}/demo') if 'eval_top1' in m]
  assert [m['step'] for m in evaluations] == [8]


# What the Models example says it gives, checked after it ran.
MODELS_CHECKS = """
assert callable(list_models) and 'inception_resnet_v2' in list_models()
assert set(variables) == {'params', 'batch_stats'}
assert jax.tree_util.tree_structure(shapes) == jax.tree_util.tree_structure(variables)
assert jax.tree_util.tree_all(jax.tree_util.tree_map(
    lambda s, v: s.shape == v.shape and s.dtype == v.dtype, shapes, variables))
assert logits.dtype == jnp.float32 and logits.shape == (8, 1000), logits.shape
assert set(new_state) == {'batch_stats'} and logits.shape == (8, 1000)
print('ran')
"""


def test_models_example_runs():
  """The block as written, on a narrow and shallow Inception-ResNet-v2 and 75x75 images (the
  smallest the network takes): the same calls, seconds instead of minutes."""
  text = substitute(block(MODELS).text, [
      ("create('inception_resnet_v2', num_classes=1000, scan_blocks=True)",
       "create('inception_resnet_v2', num_classes=1000, scan_blocks=True, "
       'depth_multiplier=0.125, repeats=(1, 1, 1))'),
      ('jnp.zeros((8, 299, 299, 3))', 'jnp.zeros((8, 75, 75, 3))'),
  ])
  done = run([sys.executable, '-c', text + MODELS_CHECKS], timeout=300)
  assert done.returncode == 0 and done.stdout.strip() == 'ran', done.stderr[-3000:]


@pytest.mark.slow
def test_aot_on_cpu_devices_runs():
  """`python -m inception_jax.aot ... --topology=cpu:8`: the demo config's job compiled for 8 CPU
  devices, here the tiny demo's."""
  lines = [words for words in commands(block(AOT).text) if '--topology=cpu:8' in words]
  assert len(lines) == 1
  text = substitute(shlex.join(lines[0]), [
      ('--config=configs/demo.py ', '--config=configs/demo.py:tiny ')])
  done = run(shlex.split(text))  # the command sets up the 8 devices itself
  assert done.returncode == 0, done.stderr[-3000:]
  assert ' on cpu:8 ' in done.stdout and 'fits' in done.stdout, done.stdout



def test_aot_report_sample_adds_up():
  """The v5e-16 report quoted in the README: its batch, memory, speed and time agree."""
  text = ' '.join(block(AOT_REPORT).text.split())

  def number(pattern):
    return float(re.search(pattern, text)[1].replace(',', ''))

  chips = number(r'\((?:JAX topology \S+ )?(\d+) chips')
  assert number(r'global batch ([\d,]+) =') == chips * number(r'= (\d+) per chip')
  parts = [number(rf'{name} ([\d.]+)') for name in ('arguments', 'outputs', 'temporaries', 'code')]
  donated = number(r'\(([\d.]+) of them in the donated')
  assert sum(parts) - donated == pytest.approx(number(r'([\d.]+) in all'), abs=0.003)
  peak, usable = number(r'peak ([\d.]+) GiB per chip'), number(r'of ([\d.]+) GiB HBM')
  assert usable - peak == pytest.approx(number(r'fits \(([\d.]+) GiB to spare'), abs=0.006)
  step = number(r'([\d.]+) ms per step') / 1000
  per_chip = number(r'([\d,]+) img/s per chip')
  assert per_chip == pytest.approx(number(r'= (\d+) per chip') / step, rel=0.01)
  assert number(r'([\d,]+) img/s for the slice') == pytest.approx(chips * per_chip, rel=0.01)
  hours = number(r'\(([\d,]+) steps\) in') * step / 3600
  assert hours == pytest.approx(number(r'in ([\d.]+) h'), rel=0.01)


def test_tpu_pod_dry_run_prints_the_flow():
  """launch/tpu_pod.sh as written, with --dry_run (print the gcloud commands) and --skip_check
  (the compile check needs libtpu and minutes)."""
  (words,) = commands(block(TPU_POD).text)
  text = substitute(shlex.join(words), [
      ('launch/tpu_pod.sh --spot', 'launch/tpu_pod.sh --dry_run --skip_check --spot')])
  done = run(shlex.split(text), timeout=120)
  assert done.returncode == 0, done.stdout + done.stderr
  assert 'gcloud compute tpus queued-resources create irv2 --node-id=irv2 --zone=us-east5-a ' \
         '--accelerator-type=v5litepod-64' in done.stdout and '--spot' in done.stdout
  assert ('python3 -m inception_jax.main --config=configs/irv2.py --workdir=gs://BUCKET/irv2 '
          '--config.dataset.data_dir=gs://BUCKET/tensorflow_datasets '
          '--config.model.dtype=bfloat16') in done.stdout


def write_user_files(directory):
  """What a user of the Pretrained weights block has, in the public files' layouts with random
  values: timm's model.safetensors for Inception-ResNet-v2, TF-slim's inception_v4.ckpt (1001
  classes), three photographs and a folder of images of two classes."""
  from inception_jax import tf_import, weights
  from inception_jax.models import create
  timm = weights.pretrained_file('inception_resnet_v2', str(directory), download=False)
  os.rename(timm.path, directory / 'model.safetensors')
  write_slim_checkpoint(str(directory / 'inception_v4.ckpt'),
                        random_variables(create('inception_v4', num_classes=1001), seed=1),
                        'inception_v4')
  tf = tf_import.tensorflow()
  rng = np.random.default_rng(0)
  for name, shape in (('cat.jpg', (300, 400, 3)), ('my_photo.jpg', (200, 150, 3))):
    (directory / name).write_bytes(tf.io.encode_jpeg(rng.integers(0, 256, shape, np.uint8)).numpy())
  (directory / 'dog.png').write_bytes(
      tf.io.encode_png(rng.integers(0, 256, (120, 100, 3), np.uint8)).numpy())
  write_image_folder(directory / 'images', corrupt=False)  # train/{cat,dog}: 6 each, val: 2 each


def top5(output):
  """The top-5 lines of predict's output, per image: {image: [(percent, label)]}."""
  found, image = {}, None
  for line in output.splitlines():
    if not line.startswith(' '):
      image = line
      found[image] = []
    else:
      rank, percent, label = line.split(maxsplit=2)
      found[image].append((float(percent.rstrip('%')), label))
  return found


@pytest.mark.slow
def test_pretrained_weights_commands_run(tmp_path):
  """convert (timm, TF-slim), predict, fine-tune and predict again, as the block writes them, on
  files written here; the fine-tuning at 75x75 (the networks' smallest input) with batches of 4
  for one epoch of 12 images (3 steps), its blocks scanned (on 2 CPU cores the unrolled network's
  train step took twice the CPU time to compile)."""
  write_user_files(tmp_path)
  text = substitute(block(PRETRAINED).text, [
      ('--config.dataset.name=folder:/path/to/images',
       '--config.dataset.name=folder:/path/to/images --config.dataset.image_size=75 '
       '--config.batch_size=4 --config.num_epochs=1 --config.model.scan_blocks=True'),
      ('/path/to/', f'{tmp_path}/', 7),
      ('--input=model.safetensors', f'--input={tmp_path}/model.safetensors'),
      ('--input=inception_v4.ckpt', f'--input={tmp_path}/inception_v4.ckpt'),
      (' cat.jpg dog.png', f' {tmp_path}/cat.jpg {tmp_path}/dog.png'),
      (' my_photo.jpg', f' {tmp_path}/my_photo.jpg'),
  ])
  lines = commands(text)
  assert [words[2] for words in lines] == ['inception_jax.convert', 'inception_jax.convert',
                                           'inception_jax.predict', 'inception_jax.main',
                                           'inception_jax.predict']
  outputs = []
  for words in lines:
    done = run(words)
    assert done.returncode == 0, f'{shlex.join(words)}\n{done.stdout[-2000:]}{done.stderr[-3000:]}'
    outputs.append(done.stdout)
  assert outputs[0].startswith('Wrote inception_resnet_v2 (55,843,464 parameters')
  assert outputs[1].startswith('Wrote inception_v4 (42,648,232 parameters')
  classified = top5(outputs[2])
  assert list(classified) == [f'{tmp_path}/cat.jpg', f'{tmp_path}/dog.png']
  assert all(len(top) == 5 for top in classified.values())
  assert (f'Starting from {tmp_path}/irv2 (inception_resnet_v2, timm:{tmp_path}/model.safetensors)'
          in outputs[3]) and 'Logits re-initialised (2 classes).' in outputs[3]
  assert 'bn_scale=True taken from its record' in outputs[3]  # timm's BatchNorm gamma, unasked
  assert [m['step'] for m in metrics(f'{tmp_path}/finetune') if 'eval_top1' in m] == [3]
  classified = top5(outputs[4])
  assert list(classified) == [f'{tmp_path}/my_photo.jpg']
  assert sorted(label for _, label in classified[f'{tmp_path}/my_photo.jpg']) == ['cat', 'dog']


def test_deploying_commands_export_what_the_prose_loads():
  """The export commands name formats the command knows, together every one, from the checkpoint
  the Pretrained weights block converts; the prose loads the files and signatures they write."""
  from inception_jax import export
  from inception_jax.export import onnx, savedmodel, stablehlo, tflite
  converted = [w.split('=', 1)[1] for words in commands(block(PRETRAINED).text)
               if words[2:3] == ['inception_jax.convert'] for w in words
               if w.startswith('--output=')]
  exports = [words for words in commands(block(DEPLOYING).text)
             if words[:3] == ['python', '-m', 'inception_jax.export']]
  (words,) = exports
  options = dict(w.removeprefix('--').split('=', 1) if '=' in w else (w[2:], 'true')
                 for w in words[3:])
  assert options['checkpoint'] in converted, options
  formats = export.parse_formats(options['format'].split(','), options.get('tflite_int8') == 'true')
  assert formats == list(export.FORMATS)
  section = readme().split('## Deploying', 1)[1].split('\n## ', 1)[0]
  for fmt, file in [('savedmodel', ''), ('tflite', tflite.FILE), ('onnx', onnx.FILE),
                    ('stablehlo', stablehlo.FILE)]:
    assert f"/{fmt}{'/' if file else ''}{file}'" in section, (fmt, file)
  for name in (savedmodel.FLOAT_SIGNATURE, savedmodel.BYTES_SIGNATURE):
    assert f"model.signatures['{name}']" in section, name


def test_residual_scaling_study_command():
  """The study's command line: the script is there and runnable, takes an output directory, and
  reads the variables its comment names with the defaults it gives. Its runs:
  test_launch.py::test_residual_scaling_study_trains_each_scale_and_seed_then_draws_them."""
  text = block(RESIDUAL_SCALING).text
  (words,) = commands(text)
  assert words == ['launch/residual_scaling.sh', '/tmp/residual_scaling']
  script = os.path.join(ROOT, words[0])
  assert os.access(script, os.X_OK)
  with open(script) as f:
    source = f.read()
  comment = re.search(r'#\s*(.*)', text)[1]
  for name, default in re.findall(r'(\w+)="([^"]*)"', comment):
    assert f'${{{name}:-{default}}}' in source, f'{words[0]} does not default {name} to {default}'
  done = run([script], timeout=60)  # without the output directory: its usage
  assert done.returncode == 2 and 'OUTDIR' in done.stdout


def test_layout_paths_exist():
  """Each path the Layout block starts a line with is a file or directory of the checkout."""
  paths = [line.split()[0] for line in block(LAYOUT).text.splitlines()
           if line and not line[0].isspace()]
  assert len(paths) > 30
  missing = [p.rstrip(',') for p in paths
             if not os.path.exists(os.path.join(ROOT, p.rstrip(',')))]
  assert not missing, f"README.md's Layout names paths that do not exist: {missing}"
