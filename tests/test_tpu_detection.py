"""libtpu (the tpu extra) stays unstarted where there are no TPU chips, and quiet: its start-up
errors are not printed. On a TPU VM (a stand-in tree of /sys and /dev) the TPU backend is left as
JAX has it, and platforms the user chose are left alone."""

import os
import subprocess
import sys

import jax
import pytest

from inception_jax import tpu_guard

from train_utils import ROOT, needs_libtpu

# What libtpu prints when it starts without TPU chips (libtpu 0.0.42).
LIBTPU_START_UP = ('Failed to find host bounds', 'unexpected worker hostname',
                   'could not determine TPU', 'Source Location Trace', 'libtpu_init_utils')

# Backend 'tpu''s error after JAX started its backends: ours where libtpu was skipped.
REPORT = ('import jax\n'
          'from jax._src import xla_bridge\n'
          'print("devices", jax.devices())\n'
          'print("sum", jax.jit(lambda x: x * 2)(jax.numpy.arange(3)).sum())\n'
          'print("tpu:", xla_bridge._backend_errors.get("tpu"), file=sys.stderr)\n')


def python(code, **env):
  """Runs `code` in a new Python with JAX_PLATFORMS unset (as outside CI) and `env` added.
  ALLOW_MULTIPLE_LIBTPU_LOAD: a libtpu that starts prints what it prints also while another
  process (a test beside this one) holds libtpu's lock file."""
  environment = {k: v for k, v in os.environ.items()
                 if k not in ('JAX_PLATFORMS', 'JAX_FORCE_TPU_INIT')}
  environment.update({'ALLOW_MULTIPLE_LIBTPU_LOAD': '1', 'PYTHONUNBUFFERED': '1'}, **env)
  return subprocess.run([sys.executable, '-c', 'import sys\n' + code], cwd=ROOT,
                        env=environment, capture_output=True, text=True, timeout=300)


def tpu_error(result):
  """What the program of REPORT says about backend 'tpu'."""
  assert result.returncode == 0, result.stderr
  return next(line for line in result.stderr.splitlines() if line.startswith('tpu:'))[5:]


def tree(root, files):
  """A stand-in for / with `files` (path -> contents)."""
  for path, text in files.items():
    os.makedirs(os.path.dirname(root / path), exist_ok=True)
    (root / path).write_text(text)
  return str(root)


def pci(address, vendor, device):
  base = f'sys/bus/pci/devices/{address}'
  return {f'{base}/vendor': f'{vendor}\n', f'{base}/device': f'{device}\n'}


# A GCE VM without TPUs: a gVNIC network card (Google's vendor id too) and virtio devices.
GCE_VM = {**pci('0000:00:04.0', '0x1ae0', '0x0042'), **pci('0000:00:03.0', '0x1af4', '0x1004'),
          'dev/vfio/vfio': ''}
TPU_V5E_VM = {**GCE_VM, **pci('0000:00:05.0', '0x1ae0', '0x0063'), 'dev/vfio/0': ''}


@pytest.mark.quick
def test_tpu_chips_are_found_on_the_pci_bus_or_as_device_files(tmp_path):
  assert not tpu_guard.tpu_present(tree(tmp_path / 'empty', {'dev/null': ''}))
  assert not tpu_guard.tpu_present(tree(tmp_path / 'gce', GCE_VM))
  assert tpu_guard.tpu_present(tree(tmp_path / 'v5e', TPU_V5E_VM))
  # Each sign alone: the PCI ids (as JAX reads them), /dev/accel* (v4), /dev/vfio/<N> (v5e on).
  assert tpu_guard.tpu_present(tree(tmp_path / 'pci', {**GCE_VM, **pci('0000:00:06.0', '0x1ae0',
                                                                     '0x005e')}))
  assert tpu_guard.tpu_present(tree(tmp_path / 'accel', {**GCE_VM, 'dev/accel0': ''}))
  assert tpu_guard.tpu_present(tree(tmp_path / 'vfio', {**GCE_VM, 'dev/vfio/1': ''}))
  assert not tpu_guard.tpu_present()  # this machine (the suite runs without TPUs)


@pytest.mark.quick
def test_the_decision_skips_libtpu_only_without_tpus_and_without_a_users_choice(
    tmp_path, monkeypatch):
  plain, tpu_vm = tree(tmp_path / 'gce', GCE_VM), tree(tmp_path / 'v5e', TPU_V5E_VM)
  monkeypatch.setattr(tpu_guard, 'libtpu_installed', lambda: True)
  for name in ('JAX_PLATFORMS', 'JAX_FORCE_TPU_INIT'):
    monkeypatch.delenv(name, raising=False)
  chosen = jax.config.jax_platforms  # the suite's (CI: cpu), restored below
  try:
    # JAX imported: the platforms as JAX read JAX_PLATFORMS, or as set in jax.config since.
    jax.config.update('jax_platforms', None)
    assert tpu_guard.skips_libtpu(plain) and not tpu_guard.skips_libtpu(tpu_vm)
    jax.config.update('jax_platforms', '')  # empty: JAX chooses
    assert tpu_guard.skips_libtpu(plain)
    for platforms in ('cpu', 'tpu,cpu'):
      jax.config.update('jax_platforms', platforms)
      assert not tpu_guard.skips_libtpu(plain)
    jax.config.update('jax_platforms', None)
    monkeypatch.setenv('JAX_FORCE_TPU_INIT', '1')
    assert not tpu_guard.skips_libtpu(plain)
    monkeypatch.delenv('JAX_FORCE_TPU_INIT')
    # Before JAX is imported: the variable.
    monkeypatch.delitem(sys.modules, 'jax')
    assert tpu_guard.skips_libtpu(plain)
    monkeypatch.setenv('JAX_PLATFORMS', 'cpu')
    assert not tpu_guard.skips_libtpu(plain)
    monkeypatch.setenv('JAX_PLATFORMS', '')
    assert tpu_guard.skips_libtpu(plain)
    monkeypatch.setattr(tpu_guard, 'libtpu_installed', lambda: False)
    assert not tpu_guard.skips_libtpu(plain)  # no libtpu: nothing changes
  finally:
    jax.config.update('jax_platforms', chosen)


@needs_libtpu
def test_without_tpus_libtpu_is_not_started_and_prints_nothing():
  # A look for JAX that imports nothing, then JAX imported: the hook that waits for JAX's import
  # is gone after it, and JAX's module names its own loader.
  program = ('import importlib.util, inception_jax\n'
             'assert importlib.util.find_spec("jax")\n' + REPORT +
             'assert not [f for f in sys.meta_path if "inception_jax" in type(f).__module__]\n'
             'assert type(jax.__loader__).__name__ == "SourceFileLoader", jax.__loader__\n')
  ours = python(program)
  assert tpu_error(ours) == tpu_guard.NO_TPU
  assert not [line for line in LIBTPU_START_UP if line in ours.stderr], ours.stderr
  # The same as JAX_PLATFORMS=cpu, also on stderr (where a warning would show).
  cpu = python(program, JAX_PLATFORMS='cpu')
  assert ours.stdout == cpu.stdout and 'devices [CpuDevice(id=0)]' in ours.stdout
  assert ours.stderr.replace(tpu_guard.NO_TPU, 'None') == cpu.stderr
  # JAX imported first, and a program's start (on_import twice): the same.
  first = python('import jax, inception_jax\n'
                 'from inception_jax import startup\n'
                 'startup.start()\n' + REPORT)
  assert tpu_error(first) == tpu_guard.NO_TPU and first.stdout == cpu.stdout
  assert 'could not keep libtpu' not in first.stderr
  # Without inception_jax, JAX starts libtpu, which fails after printing its errors.
  bare = python(REPORT)
  assert tpu_error(bare) not in ('None', tpu_guard.NO_TPU)


@needs_libtpu
def test_on_a_tpu_vm_and_where_the_user_chose_libtpu_is_started(tmp_path):
  tpu_vm = tree(tmp_path / 'v5e', TPU_V5E_VM)
  # A stand-in TPU VM: libtpu starts (and fails, the chips being stand-ins) as without
  # inception_jax.
  on_tpu_vm = python(f'from inception_jax import tpu_guard\n'
                     f'tpu_guard.SYSTEM_ROOT = {tpu_vm!r}\n' + REPORT)
  assert tpu_error(on_tpu_vm) not in ('None', tpu_guard.NO_TPU)
  # JAX_PLATFORMS naming tpu (JAX then fails loudly), or the choice made in jax.config after
  # importing inception_jax: libtpu starts; the variable is left as the user set it.
  start = ('import os, jax, inception_jax\n'
           'print(os.environ.get("JAX_PLATFORMS"))\n'
           '{}\n'
           'try:\n'
           '  jax.devices()\n'
           'except RuntimeError as e:\n'
           '  print(e)\n')
  chose = python(start.format(''), JAX_PLATFORMS='cpu,tpu')
  assert chose.stdout.startswith('cpu,tpu\n') and "Unable to initialize backend 'tpu'" in \
      chose.stdout and tpu_guard.NO_TPU not in chose.stdout, chose.stdout + chose.stderr
  configured = python(start.format('jax.config.update("jax_platforms", "cpu,tpu")'))
  assert configured.stdout.startswith('None\n') and "Unable to initialize backend 'tpu'" in \
      configured.stdout and tpu_guard.NO_TPU not in configured.stdout
