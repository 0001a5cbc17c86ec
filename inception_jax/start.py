"""Where a training run starts: the checks before anything is computed (`check_start`), the model
options a run takes from the record of where it starts (`recorded_options`), and the start itself
(`choose_start`): the workdir's latest checkpoint (resuming), else `config.init_from` (pretrained
or converted variables), else a fresh initialisation.

Checkpoints are checked against the network the config builds before anything is restored, using
the checkpoint's `ModelRecord` and the option kinds the models declare (`InceptionNetwork.
structure_options` and friends): a mismatch stops with the flags to pass, checkpoints untouched.
Pretrained variables are then merged into a freshly initialised network, which re-initialises
the classifiers when the number of classes differs.
"""

from __future__ import annotations

import functools
from typing import Any

from absl import logging
import flax
import jax
from jax.experimental import multihost_utils
import ml_collections
import numpy as np

from inception_jax import checkpoint as ckpt, config_checks, faults, workdir as wd
from inception_jax.errors import ConfigError, MissingError
from inception_jax.job import Job
from inception_jax.models import InceptionNetwork, model_class, stack_blocks, unstack_blocks
from inception_jax.models.names import AUX_LOGITS
from inception_jax.steps import (
  TrainState,
  checkpointed,
  create_train_state,
  init_variables,
  with_diagnostics,
)


def check_start(config: ml_collections.ConfigDict, workdir: str) -> list[str]:
  """The checks of a run's start, before the data is opened and anything compiled: the config's
  fields and paths (`config_checks`), the workdir writable, and `config.init_from` where the run
  does not resume. Returns the directories it made for the workdir (`faults.remove_empty` them
  where the start fails later). The data is checked as its source opens, the room for a
  checkpoint by `choose_start`, once the network's size is known."""
  config_checks.validate(config)
  config_checks.check_paths(config, workdir)
  faults.set_current_workdir(workdir)
  faults.quiet_library_faults()
  # Writable: before the data and the compiles. A start that fails leaves no directory it made.
  made = faults.missing_directories(workdir) if jax.process_count() == 1 else []
  faults.check_workdir(workdir, tidy=jax.process_count() == 1)
  try:
    if config.init_from and wd.latest_step(workdir) is None:  # resuming ignores init_from
      check_init_from_exists(config.init_from)
  except BaseException:
    faults.remove_empty(made)
    raise
  return made


def recorded_options(config: ml_collections.ConfigDict, workdir: str
                     ) -> tuple[ml_collections.ConfigDict, str]:
  """`config` with the model options that it leaves unset (None) and that its variables depend on
  taken from the record of where the run starts: the workdir's when it resumes, else
  `config.init_from`'s (such as bn_scale=True of weights converted from timm); and, from
  `init_from`, a note naming those that differ from the network's defaults ('' if none: resuming,
  the run goes on as it started). Options the config sets are checked against the record as the
  run starts (`check_resumable`, `check_pretrained`)."""
  resuming = wd.latest_step(workdir) is not None
  path = workdir if resuming else config.init_from
  record = ckpt.ModelRecord.read(path, step_dirs=not resuming) if path else None
  if record is None or record.model != config.model.name:
    return config, ''
  cls = model_class(config.model.name)
  taken = {k: tuple(v) if isinstance(v, list) else v for k, v in record.options.items()
           if k in cls.kept_from_pretrained() and v is not None and config.model.get(k) is None}
  if not taken:
    return config, ''
  config = config.copy_and_resolve_references()
  with config.unlocked():
    for key, value in taken.items():
      config.model[key] = value
  shown = [f'{k}={v}' for k, v in taken.items() if v != getattr(cls, k)]
  return config, f'{", ".join(shown)} taken from its record' if shown and not resuming else ''


def choose_start(job: Job, checkpointer: ckpt.Checkpointer, workdir: str, taken: str = ''
                 ) -> tuple[int, TrainState, str]:
  """(step, state, line) to train `job` from: the workdir's latest checkpoint, else
  `config.init_from`, else a fresh initialisation; `line` says which ('' for a fresh start), with
  the options `taken` from init_from's record (`recorded_options`) or, resuming, those changed
  since the workdir's record (old -> new). Records the network in the workdir's model.json."""
  config = job.config
  record = ckpt.ModelRecord.for_training(config, job.source)
  old = None
  if checkpointer.latest_step() is not None:
    old = ckpt.ModelRecord.read(workdir, step_dirs=False)
    check_resumable(workdir, old, config.model.name, job.model, dataset_description(config))
    check_same_scopes(workdir, old, record)
  if jax.process_count() > 1:  # every process has read the old record before it is replaced
    multihost_utils.sync_global_devices('model_info_read')
  if jax.process_index() == 0:
    record.write(workdir)
  abstract = checkpointed(job.abstract_state())
  if jax.process_index() == 0:  # room for a checkpoint, before anything is compiled
    faults.check_room(workdir, sum(a.size * a.dtype.itemsize
                                   for a in jax.tree_util.tree_leaves(abstract)))
  restored = checkpointer.restore_latest(abstract)
  if restored is not None:
    step, state, data_state = restored
    state = jax.jit(with_diagnostics, static_argnums=1, out_shardings=job.replicated,
                    donate_argnums=0)(state, job.diagnostics)
    expected = job.source.position(step)
    if data_state != expected:
      logging.warning('The checkpoint\'s input position %s differs from %s (config changed?); '
                      'the input stream continues from step %d.', data_state, expected, step)
    changed = changed_options(old, record, job.model)
    parts = [f'Resuming from {checkpointer.directory}/{step}',
             changed and f'model options changed since its record: {changed}']
  elif config.init_from:
    step, (state, parts) = 0, pretrained_state(job, config.init_from)
    parts.insert(1, taken)
  else:
    return 0, job.initial_state(), ''
  return step, state, '; '.join(p for p in parts if p) + '.'


def dataset_description(config: ml_collections.ConfigDict) -> str:
  dataset = config.dataset
  background = ', background_class=True' if dataset.background_class else ''
  return f'config.dataset.name={dataset.name}{background}'


def changed_options(old: ckpt.ModelRecord | None, new: ckpt.ModelRecord,
                    network: InceptionNetwork) -> str:
  """'dropout_keep 0.8 -> 0.5, ...': the options (but those of the variables' structure, which
  `check_resumable` requires unchanged) in which `new` differs from `old` ('' if none)."""
  if old is None:
    return ''
  before, after = old.resolved_options(), new.resolved_options()
  return ', '.join(f'{k} {before[k]} -> {after[k]}' for k in after
                   if k not in network.structure_options and before.get(k) != after[k])


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


def check_same_scopes(workdir: str, old: ckpt.ModelRecord | None, new: ckpt.ModelRecord) -> None:
  """Fails, naming the flag, when a resume would change `config.trainable_scopes`: the optimizer
  state holds the trainable variables' moments only, and a restore into another set of them would
  not fail by itself (Orbax fills what it lacks with None). To train other scopes from the
  checkpoint, start a new workdir from it with init_from."""
  if old is None or old.trainable_scopes == new.trainable_scopes:
    return
  def flag(scopes):
    return f'--config.trainable_scopes={scopes}' if scopes else 'no --config.trainable_scopes'
  raise ConfigError(f'{workdir} holds checkpoints of a run with {flag(old.trainable_scopes)}, '
                    f'but this config has {flag(new.trainable_scopes)}; resume with the first, '
                    'or train the other scopes in a new workdir with '
                    f'--config.init_from={workdir}.')


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
  differences = record.differences(network, network.kept_from_pretrained())
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


def pretrained_state(job: Job, path: str) -> tuple[TrainState, list[str]]:
  """The train state of `job` starting from the variables at `path` (checked first), and the
  parts of a line saying what was loaded and what starts fresh (`pretrained_variables`)."""
  check_pretrained(path, job.config.model.name, job.model)  # before compiling
  # Merged on the host (every process computes the same values), then replicated by the jit.
  fresh = jax.device_get(jax.jit(
      lambda: init_variables(job.model, job.source.image_shape, job.config.seed))())
  variables, parts = pretrained_variables(path, job.model, fresh)
  return jax.jit(functools.partial(create_train_state, tx=job.tx,
                                   diagnostic_metrics=job.diagnostics),
                 out_shardings=job.replicated)(variables), parts


def pretrained_variables(path: str, network: InceptionNetwork, fresh: Any
                         ) -> tuple[Any, list[str]]:
  """The variables of `path` (a converted checkpoint or a workdir, checked by `check_pretrained`)
  merged into `fresh`, the initialised variables of `network`, and the parts of a line saying what
  was loaded and what starts fresh ('; '-joined)."""
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
  return variables, [f'Starting from {path} ({what}): {taken:,} pretrained parameters loaded',
                     *notes]
