"""The command, `python -m inception_jax.aot`: its flags, and compiling for --topology with the
environment JAX needs set first. Its usage (--help) is the package's docstring."""

import json
import sys

from absl import flags

from inception_jax import aot, cli, config_flag, errors, startup


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags (the convention of `inception_jax.cli`)."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string('topology', None, 'Cloud TPU accelerator type (v4-8, v5e-16, v5p-128, '
                      'v6e-64, ...) or cpu:N (this machine\'s CPU, as N devices).', **define)
  flags.DEFINE_bool('find_max_batch', False, 'Search the largest per-chip batch that fits.',
                    **define)
  flags.DEFINE_integer('batch_step', 8, 'Resolution of --find_max_batch, in images per chip.',
                       **define)
  flags.DEFINE_bool('json', False, 'Print the report as one JSON record.', **define)
  config_flag.define('config', flag_values)
  flags.mark_flags_as_required(['config', 'topology'], flag_values)


def main(argv, FLAGS: flags.FlagValues) -> None:
  cli.flags_only(argv)
  startup.start()
  say = lambda line: print(line, file=sys.stderr, flush=True)
  with errors.reported():
    aot.prepare_environment(FLAGS.topology)
    # deferred: JAX must start after prepare_environment (XLA_FLAGS, JAX_PLATFORMS, libtpu's)
    import jax
    # The command reports compile times: none may come from the persistent cache.
    jax.config.update('jax_enable_compilation_cache', False)
    where = aot.target(FLAGS.topology)
    say(f'Compiling {FLAGS.config.model.name} for {where.name} ({where.description}); the full '
        'networks take minutes per compile on a CPU.')
    if FLAGS.find_max_batch:
      report = aot.find_max_batch(FLAGS.config, where, FLAGS.batch_step, progress=say)
    else:
      report = aot.compile_job(FLAGS.config, where)
  print(json.dumps(report) if FLAGS.json else aot.report_text(report), flush=True)
  sys.exit(0 if report['fits'] else 1)


if __name__ == '__main__':
  __doc__ = aot.__doc__  # absl's --help prints the main module's docstring: the command's usage
  cli.run(define_flags, main)
