"""Exports a checkpoint for serving: SavedModel, TFLite, ONNX, StableHLO.

    python -m inception_jax.export --checkpoint=/path/to/irv2_timm --output=/tmp/irv2_export \\
        --format=savedmodel,tflite,onnx,stablehlo

`--checkpoint` is a directory written by `python -m inception_jax.convert` or a training workdir
(its latest checkpoint, with the moving average of the parameters unless --params=raw). Each format
goes to OUTPUT/FORMAT/ with a model.json beside it (see inception_jax/export/__init__.py).
"""

from __future__ import annotations

from absl import flags

from inception_jax import cli, export, startup, workdir as wd
from inception_jax.export import FORMATS


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags (the convention of `inception_jax.cli`)."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_string('checkpoint', None, 'Directory from inception_jax.convert, or a training '
                      'workdir.', **define)
  flags.DEFINE_string('output', None, 'Directory to write OUTPUT/FORMAT/ into.', **define)
  flags.DEFINE_list('format', ['savedmodel'], f'Formats to write, of {",".join(FORMATS)}.',
                    **define)
  flags.DEFINE_bool('tflite_int8', False, 'Also write the dynamic-range int8 TFLite model '
                    '(the same as adding tflite_int8 to --format).', **define)
  flags.DEFINE_enum('params', 'ema', ['ema', 'raw'], 'A training workdir\'s averaged (ema) or raw '
                    'parameters.', **define)
  flags.DEFINE_string('model', None, 'Network name, when the checkpoint has no model.json.',
                      **define)
  flags.DEFINE_integer('top', 5, 'Classes that the SavedModel\'s `classify` signature returns.',
                       **define)
  flags.DEFINE_list('platforms', ['cpu'], 'What the SavedModel and StableHLO programs are lowered '
                    'for, of cpu, cuda, rocm, tpu (TFLite and ONNX run anywhere).', **define)
  flags.mark_flags_as_required(['checkpoint', 'output'], flag_values)


def main(argv, FLAGS: flags.FlagValues) -> None:
  cli.flags_only(argv)
  startup.start()
  wd.check(FLAGS.checkpoint, '--checkpoint')
  wd.check(FLAGS.output, '--output')
  formats = export.parse_formats(FLAGS.format, FLAGS.tflite_int8)
  export.check_installed(formats)
  records = export.export(FLAGS.checkpoint, FLAGS.output, formats, params=FLAGS.params,
                          model=FLAGS.model, top=FLAGS.top, platforms=FLAGS.platforms)
  for fmt, record in records.items():
    print(f'{fmt:<12} {wd.join(FLAGS.output, fmt, record.export["file"])}')


if __name__ == '__main__':
  cli.run(define_flags, main)
