"""Converts public pretrained weights into an Orbax checkpoint of our variables.

    python -m inception_jax.convert --source=keras --model=inception_resnet_v2 \
        --input=inception_resnet_v2.keras --output=/path/to/irv2_keras

The output directory loads with `inception_jax.checkpoint.load_variables` and starts a fine-tuning
run with `--config.init_from=/path/to/irv2_keras`. Sources so far: Keras (`.keras` model files, or
`.h5` weights files of `keras.applications.InceptionResNetV2` / `InceptionV3`).
"""

from __future__ import annotations

import argparse
import os

import jax

SOURCES = ('keras',)


def convert(source: str, model: str, input_path: str):
  from inception_jax import weights
  if source == 'keras':
    return weights.from_keras(input_path, model)
  raise ValueError(f'--source must be one of {", ".join(SOURCES)}, got {source!r}.')


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--source', required=True, choices=SOURCES)
  parser.add_argument('--model', required=True, help='e.g. inception_resnet_v2')
  parser.add_argument('--input', required=True, help='the file to convert')
  parser.add_argument('--output', required=True, help='directory for the Orbax checkpoint')
  args = parser.parse_args(argv)
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  if not os.path.exists(args.input):
    parser.error(f'--input {args.input} does not exist.')
  from inception_jax import checkpoint
  variables = convert(args.source, args.model, args.input)
  checkpoint.save_variables(args.output, variables)
  count = sum(x.size for x in jax.tree_util.tree_leaves(variables['params']))
  print(f'Wrote {args.model} ({count:,} parameters) from {args.input} to {args.output}')


if __name__ == '__main__':
  main()
