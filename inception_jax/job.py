"""The training job as XLA compiles it (`Job`): the network, the optimizer and the jitted train
and eval steps with their mesh, shardings and donation, built from a config and a data source.
`train.Trainer` runs it; `inception_jax.aot` compiles it for a TPU slice that is not there."""

from __future__ import annotations

import functools
from typing import Sequence

import jax
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections

from inception_jax import config_checks, optim
from inception_jax.data import Source
from inception_jax.models import create
from inception_jax.steps import (
  TrainState,
  create_train_state,
  diagnostics_for,
  eval_step,
  init_variables,
  options_from_config,
  train_step,
)


class Job:
  """The training job as XLA compiles it, built from a config and a data source's shapes: the
  network, the optimizer, and the jitted train and eval steps with their mesh, shardings and
  donation, on `devices` (default: all of them). `Trainer` runs it; `inception_jax.aot` compiles it
  for a TPU slice that is not there (compile-only devices)."""

  def __init__(self, config: ml_collections.ConfigDict, source: Source,
               devices: Sequence[jax.Device] | None = None):
    devices = jax.devices() if devices is None else list(devices)
    self.config, self.source = config, source
    self.model = create(config.model.name, **options_from_config(config, source.num_classes))
    self.model.check_input((1, *source.image_shape))
    self.diagnostics = diagnostics_for(self.model, config)
    source.fit_eval_batch(len(devices))
    self.steps_per_epoch = source.steps_per_epoch
    self.every = config_checks.intervals(config, self.steps_per_epoch)
    self.num_steps = config_checks.total_steps(config, self.steps_per_epoch)
    self.schedule = optim.learning_rate_schedule(config, self.steps_per_epoch)
    self.tx = optim.make_optimizer(config, self.schedule)

    mesh = jax.make_mesh((len(devices),), ('data',), axis_types=(jax.sharding.AxisType.Auto,),
                         devices=devices)
    self.replicated = NamedSharding(mesh, P())
    self.data_sharding = NamedSharding(mesh, P('data'))
    self.train_step = jax.jit(
        functools.partial(train_step, model=self.model, tx=self.tx, schedule=self.schedule,
                          config=config),
        in_shardings=(self.replicated, self.data_sharding), out_shardings=self.replicated,
        donate_argnums=0)
    self.reset_metrics = jax.jit(TrainState.reset_metrics, out_shardings=self.replicated,
                                 donate_argnums=0)
    self.eval_step = jax.jit(functools.partial(eval_step, model=self.model),
                             in_shardings=(self.replicated, self.replicated, self.data_sharding),
                             out_shardings=self.replicated)

  def initial_state(self) -> TrainState:
    def init(seed):
      return create_train_state(init_variables(self.model, self.source.image_shape, seed), self.tx,
                                self.diagnostics)
    return jax.jit(init, static_argnums=0, out_shardings=self.replicated)(self.config.seed)

  def abstract_state(self) -> TrainState:
    """The shapes, dtypes and shardings of the train state (nothing is computed)."""
    return jax.tree_util.tree_map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.replicated),
        jax.eval_shape(self.initial_state))

  def abstract_batch(self, train: bool) -> dict[str, jax.ShapeDtypeStruct]:
    """The shapes, dtypes and sharding of a global training or eval batch."""
    return {k: jax.ShapeDtypeStruct(shape, dtype, sharding=self.data_sharding)
            for k, (shape, dtype) in self.source.batch_spec(train).items()}
