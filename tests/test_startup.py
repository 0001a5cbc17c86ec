"""Start-up settings: the XLA:CPU defaults reach users of the Python API, not only the programs;
joining the other processes of a job."""

import os
import subprocess
import sys

import jax
import pytest

from inception_jax import tpu_guard, xla_setup

from train_utils import ROOT

DEFAULT = ' '.join(f'--{k}={v}' for k, v in xla_setup.CPU_FLAGS.items())


def python(code, drop=(), **env):
  """Runs `code` in a new Python; `env` adds to this environment, without XLA_FLAGS, the opt-out
  and the variables named in `drop`."""
  environment = {k: v for k, v in os.environ.items()
                 if k not in ('XLA_FLAGS', xla_setup.OPT_OUT, *drop)}
  environment.update(env, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-c', code], cwd=ROOT, env=environment,
                        capture_output=True, text=True, check=True)


@pytest.mark.quick
def test_importing_the_package_applies_the_cpu_defaults_before_jax_starts(tmp_path):
  dump = tmp_path / 'dump'
  result = python('import os, jax, jax.numpy as jnp\n'
                  'from inception_jax.models import create\n'
                  'jax.jit(lambda x: x + 1)(jnp.ones(2)).block_until_ready()\n'
                  'print(os.environ["XLA_FLAGS"])', XLA_FLAGS=f'--xla_dump_to={dump}')
  assert result.stdout.split() == [f'--xla_dump_to={dump}', *DEFAULT.split()]
  assert dump.is_dir()  # XLA read the combined flags when its CPU backend started
  assert 'JAX started before' not in result.stderr


@pytest.mark.quick
def test_a_flag_the_user_set_and_the_opt_out_are_respected():
  name, _ = next(iter(xla_setup.CPU_FLAGS.items()))
  mine = f'--{name}=reduce'
  result = python('import os, inception_jax; print(os.environ["XLA_FLAGS"])', XLA_FLAGS=mine)
  assert result.stdout.strip() == mine
  result = python('import os, inception_jax; print(os.environ.get("XLA_FLAGS"))',
                  **{xla_setup.OPT_OUT: '0'})
  assert result.stdout.strip() == 'None'


def test_jax_started_first_gets_a_warning_that_says_how():
  result = python('import os, jax, jax.numpy as jnp\n'
                  'jnp.ones(1).block_until_ready()\n'
                  'import inception_jax\n'
                  'print(os.environ.get("XLA_FLAGS"))')
  assert result.stdout.strip() == 'None'
  assert 'JAX started before inception_jax was imported' in result.stderr
  assert f'XLA_FLAGS="{DEFAULT}"' in result.stderr


def test_distributed_start_on_a_cloud_tpu_vm(monkeypatch):
  """On a TPU VM (its chips' device files present) the job joins JAX's distributed service
  (which finds the hosts from the metadata server), also where no TPU_* variable is set; the
  preemption checkpoint of a pod depends on it. Elsewhere a single process starts nothing."""
  from inception_jax import distributed
  calls = []
  monkeypatch.setattr(jax.distributed, 'initialize', lambda *a, **k: calls.append((a, k)))
  for name in ('TPU_WORKER_HOSTNAMES', 'MEGASCALE_COORDINATOR_ADDRESS', 'SLURM_NTASKS'):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(tpu_guard.glob, 'glob', lambda pattern: [])
  distributed.initialize()
  assert calls == [] and not distributed.on_tpu_vm()
  monkeypatch.setattr(tpu_guard.glob, 'glob',
                      lambda pattern: ['/dev/accel0'] if pattern == '/dev/accel*' else [])
  monkeypatch.setattr(jax, 'process_index', lambda: 0)
  distributed.initialize()
  # JAX's heartbeat waits longer than PeerWatch (60 s by default), which reports a lost process.
  assert calls == [((), {'heartbeat_timeout_seconds': 130})] and distributed.on_tpu_vm()


def test_the_compilation_cache_is_on_in_the_users_cache_unless_chosen_or_opted_out(tmp_path):
  program = ('import os, inception_jax, jax, jax.numpy as jnp\n'
             'jax.jit(lambda x: x * 3)(jnp.ones(2)).block_until_ready()\n'
             'print(jax.config.jax_compilation_cache_dir)')
  drop = [k for k in os.environ if k.startswith('JAX_COMPILATION_CACHE')]  # the suite's own
  home = tmp_path / 'cache_home'
  ours = python(program, drop, XDG_CACHE_HOME=str(home)).stdout.strip()
  assert ours == str(home / 'inception_jax' / 'xla' / xla_setup._cpu_kind())
  assert any(name.startswith('jit__lambda') for name in os.listdir(ours))  # it wrote the program
  # JAX imported first (before any computation) gets it too.
  assert python('import jax\n' + program, drop, XDG_CACHE_HOME=str(home)).stdout.strip() == ours
  # The user's directory wins, also when set through jax.config after importing jax.
  mine = str(tmp_path / 'mine')
  assert python(program, drop, JAX_COMPILATION_CACHE_DIR=mine).stdout.strip() == mine
  configured = python(f'import jax; jax.config.update("jax_compilation_cache_dir", "{mine}")\n'
                      + program, drop, XDG_CACHE_HOME=str(home))
  assert configured.stdout.strip() == mine
  off = python(program, drop, XDG_CACHE_HOME=str(home), **{xla_setup.OPT_OUT: '0'})
  assert off.stdout.strip() == 'None'
