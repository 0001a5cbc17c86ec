"""Orbax checkpointing of the training state and the input position, behind one small interface.

Checkpoints live in `WORKDIR/checkpoints/<step>/` with two items: `state` (the train state pytree)
and `data` (JSON: where the input stream stands). Saves are asynchronous; Orbax writes each one to a
temporary directory and renames it when complete, so a crash mid-save never leaves a partial
checkpoint under a step's name. A checkpoint that fails to restore is moved to
`WORKDIR/checkpoints_corrupt/` and the previous one is used.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from typing import Any, Optional

from absl import logging
import jax
import orbax.checkpoint as ocp

# Beside a converted checkpoint or in a training workdir: what network the variables are for.
MODEL_INFO = 'model.json'


class Checkpointer:
  def __init__(self, workdir: str, keep: int = 3):
    self.directory = os.path.abspath(os.path.join(workdir, 'checkpoints'))
    self.keep = keep
    self._manager = self._make_manager()

  def _make_manager(self) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        preservation_policy=ocp.checkpoint_managers.LatestN(self.keep),
        enable_async_checkpointing=True, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(self.directory, options=options,
                                 item_names=('state', 'data'))

  def steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def latest_step(self) -> Optional[int]:
    steps = self.steps()
    return steps[-1] if steps else None

  def save(self, step: int, state: Any, data_state: dict) -> None:
    self._manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(state), data=ocp.args.JsonSave(data_state)), force=True)

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def restore_latest(self, abstract_state: Any) -> Optional[tuple[int, Any, dict]]:
    """(step, state, data_state) of the newest readable checkpoint, or None when there is none."""
    for step in reversed(self.steps()):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return step, restored['state'], dict(restored['data'])
      except Exception as e:  # pylint: disable=broad-except
        self._set_aside(step, e)
    return None

  def _set_aside(self, step: int, error: Exception) -> None:
    corrupt = os.path.join(os.path.dirname(self.directory), 'checkpoints_corrupt')
    target = os.path.join(corrupt, f'{step}-{int(time.time())}')
    logging.error('Checkpoint %s/%d is unreadable (%s: %s); moved it to %s and trying the '
                  'previous one.', self.directory, step, type(error).__name__, error, target)
    os.makedirs(corrupt, exist_ok=True)
    shutil.move(os.path.join(self.directory, str(step)), target)
    self._manager.close()
    self._manager = self._make_manager()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()


def write_model_info(directory: str, info: dict) -> None:
  """Records which network a checkpoint holds: `{'model': name, 'options': {...create options},
  'image_size': int, 'classes': 'imagenet' | 'imagenet+background' | [names] | None, ...}`."""
  import tensorflow as tf  # gfile: local paths and gs://
  tf.io.gfile.makedirs(directory)
  with tf.io.gfile.GFile(os.path.join(directory, MODEL_INFO), 'w') as f:
    f.write(json.dumps(info, indent=1, sort_keys=True))


def read_model_info(path: str, step_dirs: bool = True) -> Optional[dict]:
  """The `write_model_info` record of a converted checkpoint, a workdir or (with `step_dirs`) one
  of a workdir's checkpoint steps (`workdir/checkpoints/N`)."""
  import tensorflow as tf
  path = os.path.abspath(path)
  for directory in (path, os.path.dirname(os.path.dirname(path)))[:2 if step_dirs else 1]:
    name = os.path.join(directory, MODEL_INFO)
    if tf.io.gfile.exists(name):
      with tf.io.gfile.GFile(name) as f:
        return json.load(f)
  return None


def save_variables(path: str, variables: Any, info: Optional[dict] = None) -> None:
  """Writes a model's `variables` ({'params', 'batch_stats'}) as one Orbax checkpoint, with the
  `write_model_info` record `info` beside them when given."""
  with ocp.StandardCheckpointer() as checkpointer:
    checkpointer.save(os.path.abspath(path), variables, force=True)
  if info is not None:
    write_model_info(path, info)


def load_variables(path: str, ema: bool = False) -> Any:
  """Reads variables written by `save_variables`, or the latest train state of a workdir, as numpy.

  `path` is a directory from `save_variables` / `inception_jax.convert`, a training workdir, or one
  step of its checkpoints (`WORKDIR/checkpoints/<step>`). From a train state, `ema` takes the
  moving average of the parameters (what evaluation reports) instead of the raw ones.
  """
  path = os.path.abspath(path)
  if os.path.isdir(os.path.join(path, 'checkpoints')):
    steps = [int(s) for s in os.listdir(os.path.join(path, 'checkpoints')) if s.isdigit()]
    if not steps:
      raise FileNotFoundError(f'{path}/checkpoints holds no checkpoint to start from.')
    path = os.path.join(path, 'checkpoints', str(max(steps)))
  if os.path.isdir(os.path.join(path, 'state')):
    state = _restore_on_host(os.path.join(path, 'state'))
    params = state['ema_params'] if ema and state.get('ema_params') else state['params']
    return {'params': params, 'batch_stats': state['batch_stats']}
  if not os.path.isdir(path):
    raise FileNotFoundError(f'No checkpoint at {path}: config.init_from takes a directory written '
                            'by `python -m inception_jax.convert` or a training workdir.')
  return _restore_on_host(path)


def _restore_on_host(path: str) -> Any:
  """Restores a checkpoint onto this process's first device, whatever topology wrote it."""
  with ocp.StandardCheckpointer() as checkpointer:
    metadata = checkpointer.metadata(path).item_metadata
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree_util.tree_map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device), metadata)
    return jax.device_get(checkpointer.restore(path, target))
