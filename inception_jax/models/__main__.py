"""Prints the model zoo: parameters, GMACs and output shape of every registered model.

    python -m inception_jax.models [--size=299] [--num_classes=1000] [--bn_scale] [--small_inputs]

Shapes only: nothing is compiled or computed, so this takes seconds on a laptop.
"""

from __future__ import annotations

import argparse
import functools

import jax

from inception_jax.models.registry import create, list_models
from inception_jax.models.summary import abstract_variables, count_macs, count_params, image_spec


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--size', type=int, default=299, help='input height and width in pixels')
  parser.add_argument('--num_classes', type=int, default=1000)
  parser.add_argument('--bn_scale', action='store_true',
                      help='count BatchNorm gamma too (timm counts it; TF-slim has none)')
  parser.add_argument('--small_inputs', action='store_true',
                      help='small-image mode (e.g. --size=32 for CIFAR-10)')
  args = parser.parse_args(argv)

  print(f'{"model":<28}{"params":>14}{"GMACs":>9}  output at {args.size}x{args.size}')
  for name in list_models():
    model = create(name, num_classes=args.num_classes, bn_scale=args.bn_scale,
                   small_inputs=args.small_inputs)
    try:
      model.check_input(image_spec(args.size).shape)
    except ValueError as e:
      parser.error(str(e))
    variables = abstract_variables(model, args.size)
    output = jax.eval_shape(functools.partial(model.apply, train=False), variables,
                            image_spec(args.size))
    macs = count_macs(model, variables, args.size)
    print(f'{name:<28}{count_params(variables):>14,}{macs / 1e9:>9.2f}  '
          f'{tuple(output.shape)} {output.dtype}')


if __name__ == '__main__':
  main()
