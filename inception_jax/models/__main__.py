"""Prints the model zoo: parameters, GMACs and output shape of every registered model.

    python -m inception_jax.models [--size=299] [--num_classes=1000] [--bn_scale] [--small_inputs]

Shapes only: nothing is compiled or computed, so this takes seconds on a laptop.
"""

from __future__ import annotations

from absl import flags

from inception_jax import cli, errors
from inception_jax.models.summary import zoo, zoo_table


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags (the convention of `inception_jax.cli`)."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_integer('size', 299, 'Input height and width in pixels.', **define)
  flags.DEFINE_integer('num_classes', 1000, 'Classes of the classifier.', **define)
  flags.DEFINE_bool('bn_scale', False, 'Count BatchNorm gamma too (timm counts it; TF-slim has '
                    'none).', **define)
  flags.DEFINE_bool('small_inputs', False, 'Small-image mode (e.g. --size=32 for CIFAR-10).',
                    **define)


def main(argv, FLAGS: flags.FlagValues) -> None:
  cli.flags_only(argv)
  try:
    rows = zoo(FLAGS.size, num_classes=FLAGS.num_classes, bn_scale=FLAGS.bn_scale,
               small_inputs=FLAGS.small_inputs)
  except ValueError as e:
    raise errors.ConfigError(str(e)) from e
  print(zoo_table(rows, FLAGS.size))


if __name__ == '__main__':
  cli.run(define_flags, main)
