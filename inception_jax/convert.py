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
"""

from __future__ import annotations

import argparse
import os

import jax

SOURCES = ('timm', 'keras', 'slim')


def convert(source: str, model: str, input_path: str, background: str = 'drop',
            aux_logits=None):
  """(variables, record) of `input_path` converted from `source`."""
  from inception_jax import checkpoint, weights
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


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--source', required=True, choices=SOURCES)
  parser.add_argument('--model', required=True, help='e.g. inception_resnet_v2')
  parser.add_argument('--input', required=True,
                      help='the file (or TF1 checkpoint prefix) to convert')
  parser.add_argument('--output', required=True, help='directory for the Orbax checkpoint')
  parser.add_argument('--background', choices=('drop', 'keep'), default='drop',
                      help="TF-slim's 1001st class (index 0): drop it (1000 classes) or keep it")
  parser.add_argument('--no_aux', action='store_true',
                      help="TF-slim: leave the auxiliary head out even when the checkpoint has one")
  args = parser.parse_args(argv)
  from inception_jax import runtime
  runtime.start()
  exists = os.path.exists(args.input) or os.path.exists(args.input + '.index')
  if not exists:
    parser.error(f'--input {args.input} does not exist.')
  from inception_jax import checkpoint
  variables, record = convert(args.source, args.model, args.input, args.background,
                            False if args.no_aux else None)
  checkpoint.save_variables(args.output, variables, record)
  count = sum(x.size for x in jax.tree_util.tree_leaves(variables['params']))
  print(f'Wrote {args.model} ({count:,} parameters, options {record.options}) from {args.input} '
        f'to {args.output}')


if __name__ == '__main__':
  main()
