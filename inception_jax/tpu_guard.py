"""libtpu kept unstarted on a machine without TPU chips, and the one test of whether a machine has
them (`tpu_present`). `inception_jax.startup` sets the guard up when `inception_jax` is imported.

libtpu (the `tpu` extra, which `inception_jax.aot` needs) prints errors at start-up on a machine
without TPU chips ("Failed to find host bounds ...", "unexpected worker hostname ...") and then
fails: JAX's `tpu` backend is left out when JAX starts its backends, unless this machine has TPU
chips (`tpu_present`) or the user chose the platforms (`JAX_PLATFORMS`, `jax.config`'s
`jax_platforms`, or `JAX_FORCE_TPU_INIT`). GPU backends are untouched, and compiling for a TPU
slice that is not there (`inception_jax.aot`) still works. `import inception_jax` does not import
JAX for this: the guard waits for JAX's import (`_AfterJaxImport`).
"""

from __future__ import annotations

import glob
import importlib.abc
import importlib.util
import os
import sys
import warnings

# Google's PCI vendor id and the device ids of its TPU chips (v3, v4, v5p, v5e, v6e, TPU7x and one
# without a public name), as JAX's own check lists them (jax/_src/hardware_utils.py, read when JAX
# sets up Cloud TPUs). Google's gVNIC network card shares the vendor id: the device id decides.
GOOGLE_PCI_VENDOR = '0x1ae0'
TPU_PCI_DEVICES = frozenset({'0x0027', '0x0056', '0x005e', '0x0062', '0x0063', '0x006f', '0x0076'})
# Where `tpu_present` looks by default; tests point it at a stand-in tree.
SYSTEM_ROOT = '/'


def tpu_present(root: str | None = None) -> bool:
  """Whether this machine has TPU chips (a Cloud TPU VM), read from `root` (`SYSTEM_ROOT`): a
  Google TPU on the PCI bus (/sys/bus/pci/devices/*/vendor and device, JAX's test), or the device
  files TPU chips appear as, /dev/accel* (up to v4) and /dev/vfio/<N> (v5e and later), which also
  cover a generation newer than the ids above."""
  root = root or SYSTEM_ROOT
  dev = os.path.join(root, 'dev')
  if glob.glob(os.path.join(dev, 'accel*')) or glob.glob(os.path.join(dev, 'vfio', '[0-9]*')):
    return True
  for vendor in glob.glob(os.path.join(root, 'sys', 'bus', 'pci', 'devices', '*', 'vendor')):
    try:
      with open(vendor) as f:
        if f.read().strip() != GOOGLE_PCI_VENDOR:
          continue
      with open(os.path.join(os.path.dirname(vendor), 'device')) as f:
        if f.read().strip() in TPU_PCI_DEVICES:
          return True
    except OSError:
      continue
  return False


def libtpu_installed() -> bool:
  """Whether JAX would find libtpu (as jax/_src/cloud_tpu_init.py looks: TPU_LIBRARY_PATH, or
  the libtpu package), without importing it."""
  path = os.environ.get('TPU_LIBRARY_PATH')
  return bool(path and os.path.isfile(path)) or importlib.util.find_spec('libtpu') is not None


def platforms_chosen() -> bool:
  """Whether the user chose JAX's platforms: JAX_PLATFORMS (an empty value asks JAX to choose),
  `jax.config.update('jax_platforms', ...)`, or JAX_FORCE_TPU_INIT (JAX's own switch to set up a
  TPU it cannot see)."""
  if 'JAX_FORCE_TPU_INIT' in os.environ:
    return True
  if 'jax' in sys.modules:  # JAX_PLATFORMS as JAX read it at its import, or as set since
    # deferred: runs from `import inception_jax`, before JAX may load
    import jax
    return bool(jax.config.jax_platforms)
  return bool(os.environ.get('JAX_PLATFORMS'))


def skips_libtpu(root: str | None = None) -> bool:
  """The decision: leave JAX's `tpu` backend (libtpu) out, because libtpu is installed but this
  machine (`root`) has no TPU chips and the user did not choose the platforms."""
  return libtpu_installed() and not platforms_chosen() and not tpu_present(root)


NO_TPU = ('no TPU chips on this machine, so inception_jax left libtpu unstarted (it prints errors '
          'at start-up without them); JAX_PLATFORMS=tpu,cpu starts it anyway')


def _guard_tpu_backend() -> None:
  """Puts a guard in front of the factory of JAX's `tpu` backend. JAX starts every backend it has
  a factory for unless the platforms are chosen, and the `tpu` factory loads libtpu, which prints
  its start-up errors on a machine without TPUs. Why this way rather than JAX_PLATFORMS: a list of
  the platforms to start (e.g. 'cpu', or 'cuda,cpu') would drop GPUs, or name GPU plugins that may
  not be installed, make any backend that fails to start fatal instead of skipped, and travel to
  child processes as if the user had set it. The guard concerns the `tpu` backend alone and takes
  its decision when JAX starts its backends, so a choice the user makes until then still wins
  (the original factory runs). libtpu's own start-up has no switch for this (JAX already sets
  TPU_SKIP_MDS_QUERY=1 without TPU chips, which spares the metadata server's queries), and the
  compile-only TPU devices of `inception_jax.aot` do not use the backend (JAX's
  `make_pjrt_tpu_topology` loads libtpu itself). Uses jax.extend's `register_backend_factory`, and
  JAX's registry (private) for the factory it replaces; where either is missing, does nothing."""
  # deferred: runs once JAX is imported (the import hook)
  from jax._src import xla_bridge
  registration = getattr(xla_bridge, '_backend_factories', {}).get('tpu')
  if registration is None or getattr(registration.factory, 'inception_jax_guard', False):
    return
  if xla_bridge.backends_are_initialized():
    return
  original = registration.factory

  def guarded():
    if skips_libtpu():
      raise RuntimeError(NO_TPU)  # JAX records it for jax.devices('tpu') and goes on quietly
    return original()

  guarded.inception_jax_guard = True
  # deferred: runs once JAX is imported (the import hook)
  from jax.extend import backend
  backend.register_backend_factory('tpu', guarded, priority=registration.priority,
                                   fail_quietly=registration.fail_quietly)


class _AfterJaxImport(importlib.abc.MetaPathFinder):
  """Runs `then` once, right after the `jax` package is imported (its backends' factories
  registered, no backend started), and leaves `sys.meta_path` then: gives the spec of `jax` that
  the other finders find a loader that runs `then` after JAX's own. (`import inception_jax` must
  not import JAX itself: JAX reads its environment variables, JAX_PLATFORMS and the cache's, when
  it is imported, and programs set them after importing inception_jax.) A look that does not
  import (`importlib.util.find_spec('jax')`) leaves it waiting."""

  def __init__(self, then):
    self.then = then

  def find_spec(self, name, path=None, target=None):
    if name != 'jax':
      return None
    for finder in sys.meta_path:
      if finder is self or not hasattr(finder, 'find_spec'):
        continue
      spec = finder.find_spec(name, path, target)
      if spec is not None:
        break
    else:
      return None
    if spec.loader is not None and hasattr(spec.loader, 'exec_module'):
      spec.loader = _ThenLoader(spec.loader, self)
    return spec

  def done(self):
    if self in sys.meta_path:
      sys.meta_path.remove(self)
    try:
      self.then()
    except Exception as e:  # never break `import jax`
      warnings.warn(f'inception_jax could not keep libtpu unstarted: {e!r}', stacklevel=3)


class _ThenLoader(importlib.abc.Loader):
  """`loader`, and `finder.done()` after it executed the module."""

  def __init__(self, loader, finder):
    self.loader, self.finder = loader, finder

  def create_module(self, spec):
    return self.loader.create_module(spec)

  def exec_module(self, module):
    module.__loader__ = module.__spec__.loader = self.loader  # the module names its own loader
    self.loader.exec_module(module)
    self.finder.done()


def quiet_libtpu() -> None:
  """Keeps libtpu from starting where there are no TPU chips (see the module's docstring and
  `_guard_tpu_backend`): at once if JAX is imported already, else when it is. Nothing happens
  where libtpu is not installed."""
  if not libtpu_installed():
    return
  if 'jax' in sys.modules:
    _guard_tpu_backend()
  elif not any(isinstance(f, _AfterJaxImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _AfterJaxImport(_guard_tpu_backend))
