"""Writes inception_jax/weights/timm_layouts.json.gz: the names and shapes of timm's state dicts
for the models that `inception_jax.weights.from_timm` reads, so that CI checks the name mapping
without torch (and `weights.random_state_dict` writes files in timm's layout).

    pip install torch timm && python tests/data/make_timm_layouts.py
"""

import gzip
import json
import os

import timm

MODELS = {'inception_v4': {}, 'inception_resnet_v2': {}, 'inception_v3': {'aux_logits': True}}


def main():
  layouts = {'timm_version': timm.__version__}
  for name, kwargs in MODELS.items():
    state = timm.create_model(name, pretrained=False, **kwargs).state_dict()
    layouts[name] = [[key, list(value.shape)] for key, value in state.items()]
  root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  path = os.path.join(root, 'inception_jax', 'weights', 'timm_layouts.json.gz')
  with gzip.open(path, 'wt') as f:
    json.dump(layouts, f)
  print('wrote', path)


if __name__ == '__main__':
  main()
