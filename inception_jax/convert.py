"""Converts public pretrained weights into an Orbax checkpoint of our variables.

    python -m inception_jax.convert --source=timm --model=inception_resnet_v2 \\
        --input=model.safetensors --output=/path/to/irv2_timm
    python -m inception_jax.convert --source=slim --model=inception_v4 \\
        --input=inception_v4.ckpt --output=/path/to/v4_slim            # 1000 classes
    python -m inception_jax.convert --source=keras --model=inception_v3 \\
        --input=inception_v3.keras --output=/path/to/v3_keras

The output directory holds the variables and `model.json` (the network's options and classes); it
loads with `inception_jax.checkpoint.load_variables`, classifies images with
`python -m inception_jax.predict --checkpoint=DIR`, and starts fine-tuning with
`--config.init_from=DIR`. Sources: timm (`.safetensors`, or `.pth` with torch installed), Keras
(`.keras` models or `.h5` weights of `keras.applications`), TF-slim (TF1 checkpoints, 1001 classes:
the background class is dropped unless `--background=keep`).

A file that does not fit `--model` is an error of a few lines that names the model it fits and the
command that converts it; a file of another source names that source. The Python API raises the
same `weights.ConversionError`, whose `names` lists every tensor a message shows a few of.
"""

from __future__ import annotations

import os
import shlex
from typing import NamedTuple

from absl import flags
import jax

from inception_jax import checkpoint, cli, errors, startup, weights, workdir as wd

SOURCES = ('timm', 'keras', 'slim')


class Arguments(NamedTuple):
  """The command's flags, as `explain` reads them."""
  source: str
  model: str
  input: str
  output: str
  background: str = 'drop'
  no_aux: bool = False


def convert(source: str, model: str, input_path: str, background: str = 'drop',
            aux_logits=None):
  """(variables, record) of `input_path` converted from `source`."""
  if source == 'keras':
    variables = weights.from_keras(input_path, model)
  elif source == 'timm':
    variables = weights.from_timm(input_path, model)
  elif source == 'slim':
    variables = weights.from_slim(input_path, model, background=background, aux_logits=aux_logits)
  else:
    raise ValueError(f'--source must be one of {", ".join(SOURCES)}, got {source!r}.')
  options = weights.options_from_variables(variables, model, source)
  return variables, checkpoint.ModelRecord.for_conversion(model, options, source, input_path)


def _command(args: Arguments, **changes: str) -> str:
  """The command line of `args`, with `changes` to its flags (e.g. model='inception_v3')."""
  values = {'source': args.source, 'model': args.model, 'input': args.input, 'output': args.output}
  if args.background != 'drop':
    values['background'] = args.background
  values.update(changes)
  words = [f'--{k}={v}' for k, v in values.items()] + (['--no_aux'] if args.no_aux else [])
  return ' '.join(['python -m inception_jax.convert', *map(shlex.quote, words)])


def _fix(error: Exception, args: Arguments) -> dict[str, str]:
  """The flags to change so that `args` converts: the one model that the input fits, or the source
  that reads it (and the model it fits there, which takes converting it); {} when unknown."""
  if isinstance(error, weights.FileFormatError) and error.source:
    fix = {'source': error.source}
    try:
      convert(error.source, args.model, args.input, args.background,
              False if args.no_aux else None)
    except weights.ConversionError as e:
      fix.update({'model': e.fits[0]} if len(e.fits) == 1 else {})
    except (OSError, ImportError):
      pass
    return fix
  if isinstance(error, weights.ConversionError) and len(error.fits) == 1:
    return {'model': error.fits[0]}
  return {}


def explain(error: Exception, args: Arguments) -> str:
  """The few lines that tell a person why `args` did not convert, and the command that would."""
  if isinstance(error, weights.FileFormatError):
    message = str(error)
  elif isinstance(error, weights.ConversionError):
    message = f'--input={args.input} does not fit --model={args.model}: {error}'
  elif isinstance(error, OSError):
    message = f'--input={args.input} cannot be read: {error.strerror or error}.'
  else:  # ImportError: the reader needs a package, which the message names.
    message = str(error)
  fix = _fix(error, args)
  if fix:
    changed = ' '.join(f'--{k}={v}' for k, v in fix.items())
    message += f'\nTo convert it, rerun with {changed}:\n  {_command(args, **fix)}'
  return message


def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags (the convention of `inception_jax.cli`)."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_enum('source', None, SOURCES, 'Where the weights come from.', **define)
  flags.DEFINE_string('model', None, 'The network to convert to, e.g. inception_resnet_v2.',
                      **define)
  flags.DEFINE_string('input', None, 'The file (or TF1 checkpoint prefix) to convert.', **define)
  flags.DEFINE_string('output', None, 'Directory for the Orbax checkpoint.', **define)
  flags.DEFINE_enum('background', 'drop', ['drop', 'keep'], 'TF-slim\'s 1001st class (index 0): '
                    'drop it (1000 classes) or keep it.', **define)
  flags.DEFINE_bool('no_aux', False, 'TF-slim: leave the auxiliary head out even when the '
                    'checkpoint has one.', **define)
  flags.mark_flags_as_required(['source', 'model', 'input', 'output'], flag_values)


def main(argv, FLAGS: flags.FlagValues) -> None:
  cli.flags_only(argv)
  args = Arguments(FLAGS.source, FLAGS.model, FLAGS.input, FLAGS.output, FLAGS.background,
                   FLAGS.no_aux)
  startup.start()
  wd.check(args.output, '--output')
  exists = os.path.exists(args.input) or os.path.exists(args.input + '.index')
  if not exists:
    prefix = ' (a TF1 checkpoint is named by its prefix: x.ckpt for x.ckpt.index)'
    raise errors.MissingError(f'--input {args.input} does not exist'
                              f'{prefix if args.source == "slim" else ""}.')
  try:
    variables, record = convert(args.source, args.model, args.input, args.background,
                                False if args.no_aux else None)
  except (weights.ConversionError, OSError, ImportError) as e:
    raise errors.UserError(explain(e, args)) from e
  checkpoint.save_variables(args.output, variables, record)
  count = sum(x.size for x in jax.tree_util.tree_leaves(variables['params']))
  print(f'Wrote {args.model} ({count:,} parameters, options {record.options}) from {args.input} '
        f'to {args.output}')


if __name__ == '__main__':
  cli.run(define_flags, main)
