"""The network as a serialized `jax.export.Exported`: StableHLO with the variables inside.

    import jax
    exported = jax.export.deserialize(open('model.stablehlo', 'rb').read())
    outputs = exported.call(images)  # {'logits', 'probabilities'}

Loading needs JAX alone (not this project). The batch dimension is symbolic ('b'); the input is
float32 [b, S, S, 3] in [-1, 1].
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from inception_jax import workdir as wd
from inception_jax.export import record as rec

FILE = 'model.stablehlo'


def export(exportable: rec.Exportable, directory: str,
           platforms: Sequence[str] = ('cpu',)) -> rec.ModelRecord:
  """Writes `directory/model.stablehlo` and its model.json; returns the record."""
  size = exportable.image_size
  batch = jax.export.symbolic_shape('b')[0]
  exported = jax.export.export(jax.jit(exportable.outputs_fn()), platforms=tuple(platforms))(
      jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32))
  wd.makedirs(directory)
  wd.write_atomically(wd.join(directory, FILE), bytes(exported.serialize()))
  return rec.write(exportable, directory, 'stablehlo', FILE, converter='jax.export',
                   platforms=list(exported.platforms),
                   calling_convention_version=exported.calling_convention_version,
                   outputs={'logits': 'float32 [b, classes]',
                            'probabilities': 'float32 [b, classes]'})
