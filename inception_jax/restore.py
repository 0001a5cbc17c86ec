"""Where a training run starts from: a workdir's own checkpoints, or pretrained variables.

Both are checked against the network the config builds before anything is restored, using the
checkpoint's `ModelRecord` and the option kinds the models declare (`InceptionNetwork.
structure_options` and friends): a mismatch stops with the flags to pass, checkpoints untouched.
Pretrained variables are then merged into a freshly initialised network, which re-initialises
the classifiers when the number of classes differs.
"""

from __future__ import annotations

from typing import Any

import flax
import numpy as np

from inception_jax import checkpoint as ckpt, workdir as wd
from inception_jax.errors import ConfigError, MissingError
from inception_jax.models import InceptionNetwork, stack_blocks, unstack_blocks
from inception_jax.models.names import AUX_LOGITS


def check_resumable(workdir: str, record: ckpt.ModelRecord | None, name: str,
                    network: InceptionNetwork, dataset: str) -> None:
  """Fails, naming the flags to pass, when the workdir's checkpoints (described by `record`) hold
  another network than `network` (registered as `name`; `dataset` describes the config's data for
  the message). Without this the restore would fail on every checkpoint, and each would be set
  aside as unreadable."""
  if record is None:
    return
  if record.model != name:
    raise ConfigError(f'{workdir} holds checkpoints of {record.model}, but this config builds '
                      f'{name}; resume with --config.model.name={record.model}, or train in a new '
                      'workdir.')
  differences = record.differences(network, network.structure_options)
  classes = differences.pop('num_classes', None)
  if classes is not None:
    raise ConfigError(f'{workdir} holds checkpoints of a {classes}-class network, but this '
                      f'config\'s dataset ({dataset}) gives {network.num_classes} classes; resume '
                      'with the dataset settings it started with, or train in a new workdir.')
  if differences:
    raise ConfigError(f'{workdir} holds checkpoints of another network than this config builds; '
                      f'resume with {ckpt.config_overrides(differences)}, or train in a new '
                      'workdir.')


def check_init_from_exists(path: str) -> None:
  """Fails, naming the field, where `config.init_from` points at nothing (local or gs://)."""
  if not wd.isdir(path):
    raise MissingError(f'config.init_from={path}: no such directory. Point it at a directory '
                       'written by `python -m inception_jax.convert` or at a training workdir.')


def check_pretrained(path: str, name: str, network: InceptionNetwork) -> None:
  """Fails, naming the config fields to set, when `path`'s record says its variables are of
  another network, or compute their function only under other options than `network` has (what
  fine-tuning adapts to, such as the classifier's width, may differ)."""
  record = ckpt.ModelRecord.read(path)
  if record is None:
    return
  if record.model != name:
    raise ConfigError(f'config.init_from={path} holds {record.model} weights, but '
                      f'config.model.name is {name}.')
  keys = [k for k in (*network.structure_options, *network.numeric_options)
          if k not in network.adaptable_options]
  differences = record.differences(network, keys)
  if differences:
    raise ConfigError(f'config.init_from={path} was built with other model options; set '
                      f'{ckpt.config_overrides(differences)}.')


def merge_pretrained(variables: Any, loaded: Any,
                     network: InceptionNetwork) -> tuple[dict[str, Any], list[str]]:
  """`variables` with every tensor of `loaded` whose name and shape match, converted to
  `variables`' block layout (scanned or unrolled), and the scopes left freshly initialised.

  A classifier (`network.classifier_scopes()`) keeps its fresh values when its width differs (a
  new `num_classes`), and the aux head may be absent on either side (absent from `loaded`, it is
  among the fresh scopes); any other mismatch, missing or leftover tensor is an error naming it.
  """
  # Compared block by block in the unrolled layout (TF-slim's), then stacked as `variables` are.
  flat_target = flax.traverse_util.flatten_dict(unstack_blocks(variables), sep='/')
  flat_loaded = flax.traverse_util.flatten_dict(unstack_blocks(loaded), sep='/')
  heads = ['/'.join(scope) for scope in network.classifier_scopes()]
  aux = (f'params/{AUX_LOGITS}/', f'batch_stats/{AUX_LOGITS}/')
  merged, problems, fresh = {}, [], set()
  for name, value in flat_target.items():
    if name not in flat_loaded:
      if name.startswith(aux):
        merged[name] = value
        fresh.add(AUX_LOGITS)
      else:
        problems.append(f'missing in checkpoint: {name} {tuple(value.shape)}')
      continue
    found = np.shape(flat_loaded[name])
    head = next((h for h in heads if name.startswith(f'params/{h}/')), None)
    if found == tuple(value.shape):
      merged[name] = np.asarray(flat_loaded[name], value.dtype)
    elif head:
      merged[name] = value
      fresh.add(head)
    else:
      problems.append(f'shape mismatch: {name} expects {tuple(value.shape)}, found {found}')
  leftover = [n for n in flat_loaded if n not in flat_target and not n.startswith(aux)]
  problems += [f'not used by the model: {n}' for n in leftover]
  if problems:
    problems.sort(key=lambda p: 'params/' not in p)  # weights first, then BatchNorm statistics
    shown = problems[:5] + ([f'... and {len(problems) - 5} more'] if len(problems) > 5 else [])
    raise ConfigError('config.init_from does not fit the model:\n  ' + '\n  '.join(shown))
  merged = stack_blocks(flax.traverse_util.unflatten_dict(merged, sep='/'), variables)
  return merged, sorted(fresh)


def pretrained_variables(path: str, network: InceptionNetwork, fresh: Any) -> tuple[Any, str]:
  """The variables of `path` (a converted checkpoint or a workdir, checked by `check_pretrained`)
  merged into `fresh`, the initialised variables of `network`, and a line saying what was loaded
  and what starts fresh."""
  loaded = ckpt.load_variables(path)
  variables, fresh_scopes = merge_pretrained(fresh, loaded, network)
  notes = [f'{AUX_LOGITS} new (the checkpoint has no aux head)' if scope == AUX_LOGITS
           else f'{scope} re-initialised ({network.num_classes} classes)'
           for scope in sorted(fresh_scopes, key=lambda scope: scope == AUX_LOGITS)]
  if AUX_LOGITS in loaded['params'] and AUX_LOGITS not in fresh['params']:
    notes.append(f"the checkpoint's {AUX_LOGITS} left out (config.model.aux_logits=False)")
  taken = sum(np.size(v) for name, v in flax.traverse_util.flatten_dict(
      variables['params'], sep='/').items()
      if not any(name.startswith(scope + '/') for scope in fresh_scopes))
  record = ckpt.ModelRecord.read(path)
  what = f'{record.model}, {record.source}' if record else 'no model.json'
  summary = f'Starting from {path} ({what}): {taken:,} pretrained parameters loaded'
  return variables, '; '.join([summary, *notes]) + '.'
