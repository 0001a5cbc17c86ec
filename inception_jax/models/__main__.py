"""Prints the model zoo: parameters, GMACs and output shape of every registered model.

    python -m inception_jax.models [--size=299] [--num_classes=1000] [--bn_scale] [--small_inputs]

Shapes only: nothing is compiled or computed, so this takes seconds on a laptop.
"""

from __future__ import annotations

import argparse

from inception_jax.models.summary import zoo, zoo_table


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=299, help='input height and width in pixels')
  parser.add_argument('--num_classes', type=int, default=1000)
  parser.add_argument('--bn_scale', action='store_true',
                      help='count BatchNorm gamma too (timm counts it; TF-slim has none)')
  parser.add_argument('--small_inputs', action='store_true',
                      help='small-image mode (e.g. --size=32 for CIFAR-10)')
  args = parser.parse_args(argv)
  try:
    rows = zoo(args.size, num_classes=args.num_classes, bn_scale=args.bn_scale,
               small_inputs=args.small_inputs)
  except ValueError as e:
    parser.error(str(e))
  print(zoo_table(rows, args.size))


if __name__ == '__main__':
  main()
