"""A checkpoint directory as a network ready to run, for `inception_jax.evaluate` and
`inception_jax.predict` (and so the notebooks, through `predict.Predictor`).

`load_network(path)` reads a directory written by `python -m inception_jax.convert` or a training
workdir (its latest checkpoint: the moving average of the parameters, or the raw ones) and returns
the network module, its variables and the directory's `ModelRecord`, which says which network,
options, image size and classes it holds.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from inception_jax import checkpoint as ckpt, weights, workdir as wd
from inception_jax.errors import ConfigError, MissingError
from inception_jax.models import create, model_class, unstack_blocks
from inception_jax.models.names import AUX_LOGITS

PARAMS = ('ema', 'raw')  # a training workdir's averaged or raw parameters
_WHAT = 'a directory written by `python -m inception_jax.convert`, or a training workdir'


class Network(NamedTuple):
  model: Any  # the Flax module
  variables: Any  # {'params': ..., 'batch_stats': ...}, numpy arrays
  record: Optional[Any]  # the directory's `checkpoint.ModelRecord`; None without a model.json


def load_network(path: str, params: str = 'ema', model: Optional[str] = None, *,
                 as_trained: bool = True, model_flag: Optional[str] = None) -> Network:
  """The network in the checkpoint directory `path`, its variables and its record.

  `params`: a training workdir's moving average of the parameters ('ema', what its evaluation
  reports) or its raw ones ('raw'); a converted checkpoint has one set. `model`: the network's name
  where the directory has no model.json (its options are then read from the variables), else it
  must be the recorded one. `model_flag`: the caller's flag for `model`, which the error for a
  directory without a record then asks for. `as_trained`: the network with every recorded option,
  as the training job evaluated it (its dtype, scanned blocks, aux head); otherwise for inference
  anywhere: the blocks unstacked, no aux head, the runtime options at their defaults (float32, no
  remat).
  """
  if params not in PARAMS:
    raise ConfigError(f'params={params!r}: a workdir\'s parameters are one of {", ".join(PARAMS)}.')
  if not wd.isdir(path):
    raise MissingError(f'--checkpoint {path} is not a directory: pass {_WHAT}.')
  record = ckpt.ModelRecord.read(path)
  if record and model and model != record.model:
    raise ConfigError(f'{path} holds {record.model} (its {ckpt.MODEL_INFO} says so), not '
                      f'{model}; leave {model_flag or "model"} out.')
  name = model or (record.model if record else None)
  if not name:
    if model_flag:
      raise ConfigError(f'{path} has no {ckpt.MODEL_INFO} saying which network it holds; pass '
                        f'{model_flag} (e.g. {model_flag}=inception_resnet_v2).')
    raise MissingError(f'{path} has no {ckpt.MODEL_INFO} saying which network it holds: pass '
                       f'{_WHAT}.')
  variables = ckpt.load_variables(path, ema=params == 'ema')
  if as_trained and record:
    return Network(create(name, **record.resolved_options()), variables, record)
  variables = unstack_blocks(variables)
  if not as_trained:
    variables = {collection: {k: v for k, v in variables.get(collection, {}).items()
                              if k != AUX_LOGITS} for collection in ('params', 'batch_stats')}
  if record:
    cls = model_class(name)
    recorded = record.resolved_options()
    options = {k: recorded[k] for k in (*cls.structure_options, *cls.numeric_options)}
  else:
    options = weights.options_from_variables(variables, name, source='')
  options = dict(options, scan_blocks=False)
  if not as_trained:
    options['aux_logits'] = False
  return Network(create(name, **options), variables, record)
