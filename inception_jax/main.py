"""Trains and evaluates an Inception network.

    python -m inception_jax.main --config=configs/irv2.py --workdir=/path/to/workdir
    python -m inception_jax.main --config=configs/demo.py --workdir=/tmp/demo   # no download
    python -m inception_jax.main --config=demo:tiny --workdir=/tmp/tiny   # a config by name

Configs are `ml_collections` files; any field can be overridden, e.g. `--config.batch_size=512`
(a misspelt field is an error naming it). Rerunning the same command resumes from the latest
checkpoint. Errors in the settings end in one or two lines (`inception_jax/errors.py`); faults (a
full disk, a lost or stuck process) in a few, with exit status 75 (`inception_jax/faults.py`);
Ctrl-C saves at the next step and ends in one line with status 130, a second one stops at once
(`inception_jax/stopping.py`).
"""

import os
import sys
import traceback

from absl import flags

from inception_jax import cli, config_flag, errors, startup


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags (the convention of `inception_jax.cli`)."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics.jsonl and TensorBoard.',
                      **define)
  flags.DEFINE_string('coordinator_address', None, 'host:port of process 0, for multi-process '
                      'runs outside Cloud TPU and SLURM.', **define)
  flags.DEFINE_integer('num_processes', None, 'Number of processes (with --coordinator_address).',
                       **define)
  flags.DEFINE_integer('process_id', None, 'This process\'s index (with --coordinator_address).',
                       **define)
  flags.DEFINE_float('peer_timeout', 60.0,
                     'Seconds without a heartbeat after which a multi-process run counts a process '
                     'as lost, and the least time without a step after which it counts one that '
                     'the others wait for as stuck; they then stop, saying which, within about '
                     'this time.', **define)
  config_flag.define('config', flag_values)
  flags.mark_flags_as_required(['config', 'workdir'], flag_values)


def main(argv, FLAGS: flags.FlagValues) -> None:
  cli.flags_only(argv)
  # deferred: JAX loads once the flags are read (--help and a bad flag answer at once)
  from inception_jax import distributed, stopping, supervise
  if distributed.joins_others(FLAGS.coordinator_address) and supervise.wanted():
    sys.exit(supervise.run(sys.argv[1:], FLAGS.workdir, FLAGS.coordinator_address))
  stopping.StopWatcher.exit_at_once = True
  try:
    startup.start()
    # deferred: train loads TensorFlow, which a supervising parent (supervise.run) never needs
    from inception_jax import train
    with errors.reported():
      distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id,
                             FLAGS.peer_timeout)
      train.train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except KeyboardInterrupt as e:  # Ctrl-C: one line, status 130 (stopping.py)
    stopping.exit_interrupted(e, FLAGS.workdir)
  except Exception:  # pylint: disable=broad-except
    if not errors.joined_others():
      raise
    # A bug met by one process of several: its traceback, then out at once, not held in JAX's
    # shutdown barrier by the processes waiting for this one (they stop as for a lost peer).
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)  # pylint: disable=protected-access


if __name__ == '__main__':
  cli.run(define_flags, main)
