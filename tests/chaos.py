"""Chaos: SIGKILL a small training run at random moments, many times, restarting it after each
kill, then check that it ends exactly where an uninterrupted run ends.

Checkpoints every step, so most kills land in the middle of an asynchronous save. After every
kill the newest finished checkpoint must be no older than before it (nothing saved is lost), no
checkpoint may ever be set aside as unreadable, and at the end the logged losses and the final
variables must equal the uninterrupted run's bit for bit (CPU).

    python tests/chaos.py                          # 5 kills of a 12-step run, about a minute
    python tests/chaos.py --kills=100 --steps=300  # a soak; prints one line per kill

The tests run it small (`tests/test_faults.py`).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # train_utils, and the configs it imports

from inception_jax import workdir as wd  # noqa: E402

from train_utils import (  # noqa: E402
  ROOT,
  assert_trees_equal,
  command,
  environment,
  final_variables,
  losses,
  run,
)


def run_until_killed(workdir: str, steps: int, delay: float, timeout: float = 600) -> bool:
  """Starts the run; `delay` seconds after its first progress line (training, compiled, and
  saving every step), SIGKILLs it. Returns whether it was killed (False: it finished first)."""
  proc = subprocess.Popen(command(workdir, num_train_steps=steps, checkpoint_every_steps=1),
                          cwd=ROOT, env=environment(), stdout=subprocess.PIPE,
                          stderr=subprocess.DEVNULL, text=True)
  deadline = time.time() + timeout
  for line in proc.stdout:
    if line.startswith('step ') or time.time() > deadline:
      break
  time.sleep(delay)
  if proc.poll() is not None:
    proc.stdout.close()
    if proc.returncode != 0:
      raise RuntimeError(f'the run failed with status {proc.returncode} (not killed)')
    return False
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  proc.stdout.close()
  return True


def chaos(workdir: str, reference: str, steps: int, kills: int, seed: int,
          max_delay: float = 3.0, log=print) -> int:
  """Kills the run in `workdir` up to `kills` times, restarts it to the end, and compares it
  with the finished run in `reference`. Returns the number of kills that landed."""
  rng = random.Random(seed)
  landed, newest = 0, None
  for i in range(kills):
    delay = rng.uniform(0.0, max_delay)
    if not run_until_killed(workdir, steps, delay):
      log(f'kill {i + 1}: the run finished before it (delay {delay:.2f} s)')
      break
    landed += 1
    saved = wd.latest_step(workdir)
    if newest is not None and (saved is None or saved < newest):
      raise AssertionError(f'kill {i + 1}: the newest checkpoint went from {newest} to {saved}')
    newest = saved
    log(f'kill {i + 1}: after {delay:.2f} s, newest checkpoint: step {saved}')
  run(workdir, num_train_steps=steps, checkpoint_every_steps=1)
  corrupt = os.path.join(workdir, 'checkpoints_corrupt')
  if os.path.isdir(corrupt) and os.listdir(corrupt):
    raise AssertionError(f'checkpoints were set aside as unreadable: {os.listdir(corrupt)}')
  if losses(workdir) != losses(reference):
    raise AssertionError(f'logged losses differ (seed {seed}):\n{losses(workdir)}\n'
                         f'{losses(reference)}')
  assert_trees_equal(final_variables(workdir), final_variables(reference))
  return landed


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--kills', type=int, default=5)
  parser.add_argument('--steps', type=int, default=12)
  parser.add_argument('--seed', type=int, default=None, help='default: drawn, and printed')
  parser.add_argument('--max_delay', type=float, default=3.0,
                      help='seconds after a (re)start within which the kill lands')
  parser.add_argument('--workdir', default=None, help='default: a new temporary directory')
  args = parser.parse_args()
  seed = random.randrange(1 << 30) if args.seed is None else args.seed
  root = args.workdir or tempfile.mkdtemp(prefix='inception_jax_chaos_')
  reference, workdir = os.path.join(root, 'uninterrupted'), os.path.join(root, 'killed')
  print(f'seed {seed}; workdirs under {root}', flush=True)
  run(reference, num_train_steps=args.steps)
  landed = chaos(workdir, reference, args.steps, args.kills, seed, args.max_delay,
                 log=lambda line: print(line, flush=True))
  print(f'OK: {landed} kill(s), then the same losses and variables as the uninterrupted run.')


if __name__ == '__main__':
  os.environ.setdefault('JAX_PLATFORMS', 'cpu')
  main()
