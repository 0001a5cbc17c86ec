"""The package's requirements: the floors file pins exactly setup.py's floors, the keep-TensorFlow
list is setup.py's list but TensorFlow, TensorFlow comes by environment marker, and the
requirements resolve to binary wheels on every supported platform (uv, which installs nothing)."""

import os
from pathlib import Path
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
import pytest

from train_utils import setup_py

ROOT = Path(__file__).resolve().parent.parent
FLOORS = ROOT / 'constraints' / 'floors.txt'
KEEP_TENSORFLOW = ROOT / 'requirements' / 'keep-tensorflow.txt'
TENSORFLOWS = {'tensorflow', 'tensorflow-cpu'}

# Supported platforms, as uv names them for --python-platform. Linux x86-64 at glibc 2.31 (Ubuntu
# 20.04, Debian 11 and later; Cloud TPU VMs' images): libtpu (the tpu extra) has no older wheels.
PLATFORMS = {'linux-x86_64': 'x86_64-manylinux_2_31', 'linux-aarch64': 'aarch64-manylinux_2_28',
             'macos-arm64': 'aarch64-apple-darwin'}
PYTHONS = ('3.11', '3.12')
# Dependencies (of dependencies) that publish no wheel, only a source distribution, and are pure
# Python, so that building it needs no compiler: TFDS's promise. Every other package must resolve
# to a wheel for the target.
PURE_PYTHON_SDISTS = {'promise'}


def _lines(text: str) -> list[str]:
  """A requirements file's lines, less comments and blank lines."""
  return [line.strip() for line in text.splitlines()
          if line.strip() and not line.lstrip().startswith('#')]


def _floors(requirements: list[str]) -> dict[str, Version]:
  floors = {}
  for text in requirements:
    requirement = Requirement(text)
    for specifier in requirement.specifier:
      assert specifier.operator == '>=', f'{text}: only floors (>=) are expected in setup.py'
      floors[canonicalize_name(requirement.name)] = Version(specifier.version)
  return floors


def test_floors_file_pins_exactly_the_floors_of_setup_py():
  setup = setup_py()
  expected = _floors(setup.INSTALL_REQUIRES)
  pinned = {}
  for line in _lines(FLOORS.read_text()):
    requirement = Requirement(line)
    specifiers = list(requirement.specifier)
    assert len(specifiers) == 1 and specifiers[0].operator == '==', f'{line}: pkg==X expected'
    assert not requirement.marker and not requirement.extras, line
    name = canonicalize_name(requirement.name)
    assert name not in pinned, f'{name} pinned twice in {FLOORS.name}'
    pinned[name] = Version(specifiers[0].version)
  assert pinned == expected
  assert 'jax' in pinned and TENSORFLOWS <= set(pinned)


def test_python_floor_is_jax_floors_and_classifiers_agree():
  setup = setup_py()
  assert setup.PYTHON_REQUIRES == '>=3.11'
  listed = {c.rsplit(' :: ', 1)[1] for c in setup.CLASSIFIERS
            if c.startswith('Programming Language :: Python :: 3.')}
  assert listed == set(PYTHONS)


def test_keep_tensorflow_list_is_setup_py_but_tensorflow():
  setup = setup_py()
  expected = sorted(str(Requirement(r)) for r in setup.INSTALL_REQUIRES
                    if canonicalize_name(Requirement(r).name) not in TENSORFLOWS)
  assert sorted(str(Requirement(r)) for r in _lines(KEEP_TENSORFLOW.read_text())) == expected


@pytest.mark.parametrize('system, machine, expected', [
    ('linux', 'x86_64', 'tensorflow-cpu'),
    ('win32', 'AMD64', 'tensorflow-cpu'),
    ('linux', 'aarch64', 'tensorflow'),
    ('darwin', 'arm64', 'tensorflow'),
    ('darwin', 'x86_64', 'tensorflow'),
])
def test_one_tensorflow_per_platform_by_marker(system, machine, expected):
  setup = setup_py()
  environment = {'sys_platform': system, 'platform_machine': machine}
  chosen = [canonicalize_name(Requirement(r).name) for r in setup.INSTALL_REQUIRES
            if canonicalize_name(Requirement(r).name) in TENSORFLOWS
            and Marker(str(Requirement(r).marker)).evaluate(environment)]
  assert chosen == [expected]


def _index_reachable() -> str | None:
  """None, or why uv's package index cannot be reached."""
  index = os.environ.get('UV_DEFAULT_INDEX') or os.environ.get('UV_INDEX_URL') or \
      'https://pypi.org/simple/'
  try:
    with urllib.request.urlopen(index.rstrip('/') + '/pip/', timeout=10):
      return None
  except (urllib.error.URLError, OSError) as e:
    return f'the package index {index} cannot be reached ({e})'


def _uv(*args: str) -> str:
  result = subprocess.run([sys.executable, '-m', 'uv', 'pip', 'compile', '--quiet', '--no-header',
                           '--no-annotate', *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=600)
  assert result.returncode == 0, f'uv pip compile {" ".join(args)}:\n{result.stderr}'
  return result.stdout


@pytest.mark.parametrize('python', PYTHONS)
@pytest.mark.parametrize('platform', PLATFORMS)
def test_requirements_resolve_to_wheels_on_every_supported_platform(platform, python):
  """setup.py's metadata (built by uv as pip would, its markers evaluated for the target) resolves
  for the platform and Python, and every package but the pure-Python PURE_PYTHON_SDISTS has a wheel
  for it, the export extra included. On Linux the other extras too: tpu (x86-64 only: libtpu has
  no aarch64 wheels) and cuda12 (x86-64, and aarch64 for GH200). Nothing is installed."""
  unreachable = _index_reachable()
  if unreachable:
    pytest.skip(unreachable)
  target = ['--python-platform', PLATFORMS[platform], '--python-version', python]
  extras = ['--extra', 'export', *{'linux-x86_64': ['--extra', 'tpu', '--extra', 'cuda12'],
                                   'linux-aarch64': ['--extra', 'cuda12']}.get(platform, [])]
  pins = _uv('setup.py', *extras, *target)
  names = [canonicalize_name(Requirement(line).name) for line in _lines(pins)]
  assert set(names) & TENSORFLOWS, pins
  binary = [a for name in names if name not in PURE_PYTHON_SDISTS for a in ('--only-binary', name)]
  with tempfile.TemporaryDirectory() as tmp:
    pinned = Path(tmp) / 'pins.txt'
    pinned.write_text(pins)
    # The same pins, each alone (no dependencies), with wheels only for all but the exceptions.
    _uv(str(pinned), '--no-deps', *binary, *target)

