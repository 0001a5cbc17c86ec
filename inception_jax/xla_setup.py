"""XLA's defaults for this project, set before JAX starts: the XLA:CPU flags and JAX's persistent
compilation cache. `inception_jax.startup` applies them when `inception_jax` is imported.

- XLA:CPU defaults (`CPU_FLAGS`; BENCHMARKS.md has the measurements behind them) are added to
  `XLA_FLAGS` when `inception_jax` is imported, provided JAX's backends have not started yet: a
  notebook or script that imports `inception_jax` before its first JAX computation gets them. When
  JAX started first on a CPU, a warning says how to get them. `INCEPTION_JAX_XLA_DEFAULTS=0` leaves
  `XLA_FLAGS` alone. The flags concern XLA:CPU only and change nothing on GPUs and TPUs.
- JAX's persistent compilation cache is on, in `~/.cache/inception_jax/xla/<this CPU>` (the
  user's cache home; 2 GiB at most, least recently used programs evicted first), for every
  program however short its compile: a second start compiles nothing it compiled before (a
  notebook after a restart, a resumed run, the same model initialised again). XLA:CPU's programs
  are built for the host's instruction set and JAX's cache key does not say which, so each kind of
  CPU gets a directory of its own (a home directory shared by a cluster's different machines).
  A cache directory set by the user (`JAX_COMPILATION_CACHE_DIR` or `jax.config`) wins, and
  `INCEPTION_JAX_XLA_DEFAULTS=0` leaves the cache as JAX has it (off).
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import warnings

CPU_FLAGS = {'xla_cpu_experimental_ynn_fusion_type': 'dot,reduce'}
OPT_OUT = 'INCEPTION_JAX_XLA_DEFAULTS'
# JAX's compilation-cache settings (the environment variables it reads when it is imported).
CACHE_DIR = 'JAX_COMPILATION_CACHE_DIR'
CACHE_SETTINGS = {'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS': '0',
                  'JAX_COMPILATION_CACHE_MAX_SIZE': str(2 << 30)}


def _jax_started() -> bool:
  if 'jax' not in sys.modules:
    return False
  # deferred: runs from `import inception_jax`, before JAX may load
  from jax._src import xla_bridge
  return xla_bridge.backends_are_initialized()


def use_xla_cpu_defaults() -> bool:
  """Adds `CPU_FLAGS` to `XLA_FLAGS` (unless named there already); False when they are not in
  effect: opted out, or JAX's CPU backend started without them."""
  if os.environ.get(OPT_OUT, '1') == '0':
    return False
  flags = os.environ.get('XLA_FLAGS', '')
  missing = [f'--{name}={value}' for name, value in CPU_FLAGS.items() if f'--{name}' not in flags]
  if not missing:
    return True
  if _jax_started():
    # deferred: runs from `import inception_jax`, before JAX may load
    import jax
    if jax.default_backend() == 'cpu':
      warnings.warn(
          'JAX started before inception_jax was imported, so its XLA:CPU defaults are off (CPU '
          'training and inference run slower without them). Import inception_jax before the first '
          f'JAX computation (in a notebook: restart it), or set XLA_FLAGS="{" ".join(missing)}"; '
          f'{OPT_OUT}=0 silences this.', stacklevel=3)
    return False
  os.environ['XLA_FLAGS'] = ' '.join([flags, *missing]).strip()
  return True


def _cpu_kind() -> str:
  """A short name for this host's instruction set: the architecture and a digest of the CPU's
  feature flags (Linux), which decide what XLA:CPU's compiled code may use."""
  flags = ''
  try:
    with open('/proc/cpuinfo') as f:
      flags = next((line for line in f if line.startswith(('flags', 'Features'))), '')
  except OSError:
    flags = platform.processor()
  return f'{platform.machine() or "cpu"}-{hashlib.sha256(flags.encode()).hexdigest()[:12]}'


def default_cache_dir() -> str:
  home = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return os.path.join(home, 'inception_jax', 'xla', _cpu_kind())


def use_compilation_cache() -> str | None:
  """Turns on JAX's persistent compilation cache (see the module's docstring) unless the user
  chose a directory or opted out; returns the directory in use, None when it is off. Takes effect
  if JAX has compiled nothing yet."""
  if os.environ.get(OPT_OUT, '1') == '0':
    return os.environ.get(CACHE_DIR)
  if 'jax' not in sys.modules:  # JAX reads these when it is imported
    os.environ.setdefault(CACHE_DIR, default_cache_dir())
    for name, value in CACHE_SETTINGS.items():
      os.environ.setdefault(name, value)
    return os.environ[CACHE_DIR]
  # deferred: runs from `import inception_jax`, before JAX may load
  import jax
  if jax.config.jax_compilation_cache_dir is None and CACHE_DIR not in os.environ:
    jax.config.update('jax_compilation_cache_dir', default_cache_dir())
    for name, value in CACHE_SETTINGS.items():
      if name not in os.environ:
        jax.config.update(name.lower(), type(jax.config.values[name.lower()])(value))
  return jax.config.jax_compilation_cache_dir
