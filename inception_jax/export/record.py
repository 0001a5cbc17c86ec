"""The network an export holds, as one function of float images, and the `model.json` beside it.

`load(checkpoint)` reads a checkpoint through the project's one loader
(`inception_jax.network.load_network`, for inference: blocks unstacked, no aux head, float32) and
returns an `Exportable`: the closed-over forward pass, the input size, the class names as `predict`
prints them, and the record that every format writes beside its file (`write`).
"""

from __future__ import annotations

import dataclasses
import functools
import json
from typing import Any, Callable, NamedTuple, Optional

import jax
import numpy as np

from inception_jax import checkpoint as ckpt, workdir as wd
from inception_jax.models import list_models, model_class, options as model_options
from inception_jax.models.names import LOGITS
from inception_jax.network import load_network
from inception_jax.predict import label_names

# What every exported model takes: the evaluation preprocessing of `inception_jax.predict`.
PREPROCESSING = ('float32 [N, {size}, {size}, 3] RGB images in [-1, 1]: the central 87.5% crop '
                 'of the image, resized bilinearly to {size}x{size} and rounded to uint8, then '
                 'x / 127.5 - 1 (inception_jax.data.preprocessing.eval_image)')


class Exportable(NamedTuple):
  model: Any  # the Flax module, for inference
  variables: Any  # its variables, numpy arrays
  record: ckpt.ModelRecord  # the checkpoint's record (or one made from the module)
  image_size: int
  names: list[str]  # one per output, as `python -m inception_jax.predict` prints them
  checkpoint: str

  @property
  def num_classes(self) -> int:
    return len(self.names)

  def logits_fn(self) -> Callable:
    """images [N, S, S, 3] float32 in [-1, 1] -> logits [N, classes], the variables closed over."""
    model, variables = self.model, self.variables
    return lambda images: model.apply(variables, images, train=False)

  def outputs_fn(self) -> Callable:
    """images -> {'logits', 'probabilities'}: what the float signature of every format returns."""
    return functools.partial(outputs, self.model, self.variables)


def outputs(model, variables, images) -> dict[str, Any]:
  """{'logits', 'probabilities'} of `images` ([N, S, S, 3] float32 in [-1, 1]) by `model`."""
  logits = model.apply(variables, images, train=False)
  return {'logits': logits, 'probabilities': jax.nn.softmax(logits, axis=-1)}


def load(checkpoint: str, params: str = 'ema', model: Optional[str] = None) -> Exportable:
  """The network of `checkpoint` (a converted checkpoint or a training workdir: its moving average
  of the parameters unless `params='raw'`), ready to export."""
  network, variables, record = load_network(checkpoint, params, model, as_trained=False,
                                            model_flag='--model')
  variables = jax.tree_util.tree_map(np.asarray, variables)
  image_size = int((record and record.image_size) or network.default_size)
  num_classes = np.shape(variables['params'][LOGITS]['bias'])[0]
  names = label_names(record.classes if record else None, num_classes)
  name = _name(network, record)
  # The options of the module as exported (blocks unstacked, no aux head, float32).
  options = {k: getattr(network, k) for k in model_options(name)}
  options = json.loads(json.dumps(options, default=str))
  if record is None:
    record = ckpt.ModelRecord(name, options, image_size, None,
                              f'checkpoint:{wd.absolute(checkpoint)}')
  else:
    record = dataclasses.replace(record, options=options, image_size=image_size)
  return Exportable(network, variables, record, image_size, names, wd.absolute(checkpoint))


def _name(network, record) -> str:
  if record is not None:
    return record.model
  return next(name for name in list_models() if model_class(name) is type(network))


def write(exportable: Exportable, directory: str, fmt: str, file: str,
          **details: Any) -> ckpt.ModelRecord:
  """Writes `directory/model.json`: the checkpoint's record with `export` saying which format,
  file, inputs and outputs (`details`) it holds and how to preprocess images for it."""
  size = exportable.image_size
  export = {'format': fmt, 'file': file, 'checkpoint': exportable.checkpoint,
            'preprocessing': PREPROCESSING.format(size=size),
            'input_shape': [None, size, size, 3], 'names': exportable.names, **details}
  record = dataclasses.replace(exportable.record, export=export)
  record.write(directory)
  return record
