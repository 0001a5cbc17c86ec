"""Orbax checkpointing of the training state and the input position, behind one small interface.

Checkpoints live in `WORKDIR/checkpoints/<step>/` with two items: `state` (the train state pytree)
and `data` (JSON: where the input stream stands). Saves are asynchronous; Orbax writes each one to a
temporary directory and renames it when complete, so a crash mid-save never leaves a partial
checkpoint under a step's name. A checkpoint that fails to restore is moved to
`WORKDIR/checkpoints_corrupt/` and the previous one is used.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
from typing import Any, Iterable, Optional

from absl import logging
import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp

from inception_jax import faults, imagenet, workdir as wd
from inception_jax.errors import ConfigError, MissingError, first_line
from inception_jax.frozen import patterns
from inception_jax.models import model_class, options as model_options
from inception_jax.steps import options_from_config

# Beside a converted checkpoint or in a training workdir: what network the variables are for.
MODEL_INFO = wd.MODEL_INFO


DIGEST = 'digest'  # the item of a training checkpoint that holds `digest(state)`


def _leaf_name(path) -> str:
  """'params/Conv2d_1a_3x3/kernel': the same for a TrainState and the dicts Orbax restores."""
  return '/'.join(str(getattr(k, 'name', getattr(k, 'key', getattr(k, 'idx', k)))) for k in path)


@jax.jit
def _sums(leaves: list[jax.Array]) -> list[jax.Array]:
  """Per array: the sum of its bits read as unsigned words, and the sum weighted by position
  (odd weights), modulo 2**32. Any change of one word changes the second; integer sums do not
  depend on the order of addition, so every device count and topology gets the same digest."""
  out = []
  for x in leaves:
    x = x.astype(jnp.uint8) if x.dtype == jnp.bool_ else x
    unsigned = {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32, 8: jnp.uint32}[x.dtype.itemsize]
    words = jax.lax.bitcast_convert_type(x, unsigned).astype(jnp.uint32).ravel()
    weights = 2 * jnp.arange(words.size, dtype=jnp.uint32) + 1
    out.append(jnp.stack([jnp.sum(words, dtype=jnp.uint32),
                          jnp.sum(words * weights, dtype=jnp.uint32)]))
  return out


def digest(tree: Any) -> dict[str, list[int]]:
  """{array name: [sum, weighted sum]} of `tree`'s arrays (`_sums`): what a checkpoint records
  of its state, to tell on restore whether the bytes read back are the bytes written. Not a
  cryptographic hash: it catches corruption (a flipped byte, a stale block), not tampering."""
  flat = jax.tree_util.tree_flatten_with_path(tree)[0]
  sums = jax.device_get(_sums([jnp.asarray(leaf) for _, leaf in flat]))
  return {_leaf_name(path): [int(v) for v in value] for (path, _), value in zip(flat, sums)}


class CorruptCheckpoint(MissingError):
  """A checkpoint whose arrays read back differ from the digest recorded when it was saved."""


def verify(tree: Any, recorded: Optional[dict], where: str) -> None:
  """Raises `CorruptCheckpoint` naming the first array of `tree` whose digest differs from
  `recorded` (None: a checkpoint written before digests were recorded, not checked)."""
  if recorded is None:
    return
  found = digest(tree)
  recorded = {name: list(value) for name, value in recorded.items()}
  changed = sorted(name for name in set(found) | set(recorded)
                   if found.get(name) != recorded.get(name))
  if changed:
    more = f' and {len(changed) - 1} more arrays differ' if len(changed) > 1 else ' differs'
    raise CorruptCheckpoint(f'{where}: {changed[0]}{more} from the digest recorded when it was '
                            'saved (the bytes on disk changed after the write)')


def _recorded_digest(step_dir: str) -> Optional[dict]:
  path = wd.path(step_dir) / DIGEST
  if not path.exists():
    return None
  return dict(ocp.JsonCheckpointHandler().restore(path))


# How the bytes of a checkpoint fail to read back (TensorStore, Orbax's JSON and metadata files).
_UNREADABLE = re.compile(r'error while reading|DATA_LOSS|[Cc]orrupt|[Tt]runcat|Failed to decode|'
                         r'Expecting value|Unterminated string|No such file|Unexpected end|'
                         r'checksum')


def unreadable(error: BaseException) -> bool:
  """Whether a restore failed on the checkpoint's bytes (set it aside), rather than on this run
  (memory, storage, a config that builds another train state: raise, keep the checkpoint)."""
  return isinstance(error, (CorruptCheckpoint, FileNotFoundError, json.JSONDecodeError)) or \
      bool(_UNREADABLE.search(str(error)))


class Checkpointer:
  def __init__(self, workdir: str, keep: int = 3):
    self.workdir = wd.absolute(workdir)
    self.directory = wd.checkpoints(workdir)
    self.keep = keep
    self._error: Optional[BaseException] = None  # a failed save `poll` saw, raised by save/wait
    self._manager = self._make_manager()

  def _make_manager(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(self.keep),
        enable_async_checkpointing=True, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(self.directory, options=options,
                                 item_names=('state', 'data', DIGEST))

  def steps(self) -> list[int]:
    return wd.finished_steps(self.directory)

  def latest_step(self) -> Optional[int]:
    steps = self.steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, data_state: dict) -> None:
    self._raise_error()
    faults.note_saving(step)  # named by a fault while Orbax waits for the previous save
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state),
        **{DIGEST: ocp.args.JsonSave(digest(state))}), force=True)
    self._finished(but_newest=True)  # Orbax finishes a save before it starts the next

  def wait(self) -> None:
    self._raise_error()
    self._manager.wait_until_finished()
    self._finished()

  def poll(self) -> None:
    """Notes a save that finished in the background without waiting (so a fault's message names
    it); a failed one is raised by the next `save` or `wait`, as Orbax would."""
    if (self._error is not None or not faults.saves_in_flight()
        or self._manager.is_saving_in_progress()):
      return
    try:
      self._manager.check_for_errors()
    except Exception as e:  # pylint: disable=broad-except
      self._error = e
      return
    self._finished()

  def _raise_error(self) -> None:
    error, self._error = self._error, None
    if error is not None:
      raise error

  def _finished(self, but_newest: bool = False) -> None:
    """Notes the saves in flight as finished (`but_newest`: all but the one just started). The
    record of the saves in flight is `faults`'s, which a fault's hint reads: one job, one
    Checkpointer saving."""
    steps = faults.saves_in_flight()[:-1] if but_newest else faults.saves_in_flight()
    if steps:
      faults.note_saved(max(steps))

  def restore_latest(self, abstract_state: Any) -> Optional[tuple[int, Any, dict]]:
    """(step, state, data_state) of the newest readable checkpoint, or None when there is none."""
    for step in reversed(self.steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        step_dir = wd.step_dir(self.workdir, step)
        verify(restored['state'], _recorded_digest(step_dir), step_dir)
        faults.note_saved(step)
        return step, restored['state'], dict(restored['data'])
      except Exception as e:  # pylint: disable=broad-except
        if not unreadable(e):  # a fault of this run (memory, storage, config), not of the bytes
          if 'tree structure' in str(e) or 'do not match' in str(e):
            raise ConfigError(f'{self.directory}/{step} does not restore into the train state '
                              'this config builds (another optimizer or model option?): '
                              f'{first_line(e)}. The checkpoints are kept: resume with the '
                              'config they were saved with, or train in a new workdir.') from e
          raise
        self._set_aside(step, e)
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    """Moves an unreadable checkpoint to WORKDIR/checkpoints_corrupt/ (process 0; every process
    reads the same bytes, so all of them find it unreadable and go on to the previous one)."""
    target = wd.join(wd.corrupt(self.workdir), f'{step}-{int(time.time())}')
    logging.error('Checkpoint %s/%d is unreadable (%s: %s); moved it to %s and trying the '
                  'previous one.', self.directory, step, type(error).__name__,
                  first_line(error), target)
    if jax.process_index() == 0:
      wd.move(wd.step_dir(self.workdir, step), target)
    self._manager.close()
    self._manager = self._make_manager()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._finished()  # no save of this job is left in flight for the next Checkpointer to see
    self._manager.close()


@dataclasses.dataclass(frozen=True)
class ModelRecord:
  """Which network a checkpoint holds: its `model.json`, beside converted variables and in
  training workdirs. Resuming, `init_from`, `predict` and `convert` all go through it.

  Attributes:
    model: the network's name in `inception_jax.models.list_models()`.
    options: its `create()` options (JSON values: lists for tuples, dtype names); options left
      out have the network's defaults.
    image_size: the input size it was trained (or converted) for.
    classes: 'imagenet', 'imagenet+background' (`inception_jax.imagenet.RECORDS`), a list of class
      names by label, or None when unknown.
    source: where the variables came from ('trained on digits', 'timm:/path/model.safetensors').
    data: a training workdir's data settings, which `evaluate` defaults to: {'name', 'data_dir',
      'eval_split'} of `config.dataset` (None where unset); None in older workdirs.
    trainable_scopes: a training workdir's `config.trainable_scopes` (its patterns,
      ','-joined), which a resume must keep: the optimizer's state depends on it. None (left out
      of model.json): everything trains.
    export: beside a model exported by `python -m inception_jax.export`: {'format', 'file',
      'checkpoint', 'preprocessing', 'signatures', ...} (`inception_jax.export.record`); None
      beside checkpoints.
  """
  model: str
  options: dict[str, Any]
  image_size: Optional[int] = None
  classes: Any = None
  source: str = ''
  data: Optional[dict[str, Any]] = None
  trainable_scopes: Optional[str] = None
  export: Optional[dict[str, Any]] = None

  @classmethod
  def for_training(cls, config, source) -> 'ModelRecord':
    """The record of a training workdir: `config`'s network on the data `source` gives."""
    options = json.loads(json.dumps(options_from_config(config, source.num_classes), default=str))
    data_dir = config.dataset.get('data_dir') or None
    data = {'name': config.dataset.name, 'data_dir': data_dir and wd.absolute(data_dir),
            'eval_split': config.dataset.get('eval_split') or None}
    scopes = ','.join(patterns(config.get('trainable_scopes'))) or None
    return cls(config.model.name, options, source.image_shape[0], source.classes,
               f'trained on {config.dataset.name}', data, scopes)

  @classmethod
  def for_conversion(cls, model: str, options: dict[str, Any], source: str,
                     input_path: str) -> 'ModelRecord':
    """The record of weights converted from `source` ('timm', 'keras', 'slim') at `input_path`,
    with the `options` they need (`inception_jax.weights.options_from_variables`)."""
    return cls(model, dict(options), model_class(model).default_size,
               imagenet.RECORDS.get(options['num_classes']),
               f'{source}:{wd.absolute(input_path)}')

  def write(self, directory: str) -> None:
    wd.makedirs(directory)
    fields = dataclasses.asdict(self)
    for name in ('trainable_scopes', 'export'):  # added later: left out where unset, as before
      if fields[name] is None:
        del fields[name]
    wd.write_atomically(wd.join(directory, MODEL_INFO),
                        json.dumps(fields, indent=1, sort_keys=True))

  @classmethod
  def read(cls, path: str, step_dirs: bool = True) -> Optional['ModelRecord']:
    """The record of a converted checkpoint, a workdir or (with `step_dirs`) one of a workdir's
    checkpoint steps (`workdir/checkpoints/N`); None where there is none."""
    path = wd.absolute(path)
    for directory in (path, step_dirs and wd.owner(path)):
      name = directory and wd.join(directory, MODEL_INFO)
      if name and wd.exists(name):
        fields = json.loads(wd.read_text(name))
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in fields.items() if k in known})
    return None

  def resolved_options(self) -> dict[str, Any]:
    """Every option of the network: the recorded value (tuples for JSON lists), else the default."""
    cls = model_class(self.model)
    defaults = {name: getattr(cls, name) for name in model_options(self.model)}
    recorded = {k: tuple(v) if isinstance(v, list) else v for k, v in self.options.items()}
    return {**defaults, **{k: v for k, v in recorded.items() if k in defaults}}

  def differences(self, network, keys: Iterable[str]) -> dict[str, Any]:
    """{option: recorded value} for each of `keys` whose value differs in the module `network`."""
    recorded = self.resolved_options()
    return {k: recorded[k] for k in keys if recorded[k] != getattr(network, k)}


def config_overrides(options: dict[str, Any]) -> str:
  """The config overrides, `--config.model.KEY=VALUE`, that make a training run build the network
  of `options` (a checkpoint's recorded options), quoted where the shell needs it."""
  flags = [f'--config.model.{key}={value}' for key, value in options.items()]
  return ' '.join(f"'{flag}'" if ' ' in flag else flag for flag in flags)


def save_variables(path: str, variables: Any, record: Optional[ModelRecord] = None) -> None:
  """Writes a model's `variables` ({'params', 'batch_stats'}) as one Orbax checkpoint, with its
  `record` beside them when given."""
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(wd.absolute(path), variables, force=True)
  if record is not None:
    record.write(path)


def load_variables(path: str, ema: bool = False) -> Any:
  """Reads variables written by `save_variables`, or the latest train state of a workdir, as numpy.

  `path` is a directory from `save_variables` / `inception_jax.convert`, a training workdir, or one
  step of its checkpoints (`WORKDIR/checkpoints/<step>`). From a train state, `ema` takes the
  moving average of the parameters (what evaluation reports) instead of the raw ones.
  """
  path = wd.absolute(path)
  if wd.isdir(wd.checkpoints(path)):
    step = wd.latest_step(path)
    if step is None:
      raise MissingError(f'{wd.checkpoints(path)} holds no checkpoint to start from.')
    path = wd.step_dir(path, step)
  if wd.isdir(wd.join(path, 'state')):
    state = _restore_on_host(wd.join(path, 'state'))
    verify(state, _recorded_digest(path), path)
    params = state['ema_params'] if ema and state.get('ema_params') else state['params']
    return {'params': params, 'batch_stats': state['batch_stats']}
  if not wd.isdir(path):
    raise MissingError(f'No checkpoint at {path}: config.init_from takes a directory written '
                       'by `python -m inception_jax.convert` or a training workdir.')
  return _restore_on_host(path)


def _restore_on_host(path: str) -> Any:
  """Restores a checkpoint onto this process's first device, whatever topology wrote it.

  Read through the item's handler, not a `Checkpointer`: a workdir's `state` item has no
  step-level metadata of its own, and a `Checkpointer` warns about that on every read."""
  handler = ocp.StandardCheckpointHandler()
  try:
    directory = wd.path(path)
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        handler.metadata(directory))
    return jax.device_get(handler.restore(directory, args=ocp.args.StandardRestore(target)))
  finally:
    handler.close()
