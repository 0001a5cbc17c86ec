"""A TensorFlow SavedModel with two serving signatures, which loads with TensorFlow alone.

The network goes through `jax.experimental.jax2tf` (native serialization: its StableHLO inside an
`XlaCallModule` op), its variables as `tf.Variable`s in the SavedModel's `variables/`:

- `serving_default`: `images` float32 [N, S, S, 3] in [-1, 1] -> `logits`, `probabilities`
  [N, classes].
- `classify`: `encoded` [N] tf.string (JPEG, PNG, GIF or BMP bytes) -> the `top` classes of each:
  `classes` int32 [N, top], `names` tf.string [N, top], `probabilities` float32 [N, top]. The
  images go through the project's own evaluation preprocessing
  (`inception_jax.data.preprocessing.eval_image`, TensorFlow ops saved in the graph), so serving
  sees exactly the pixels that evaluation and `python -m inception_jax.predict` see.

N is free in both.
"""

from __future__ import annotations

import functools
from typing import Sequence

import jax

from inception_jax import tf_import, workdir as wd
from inception_jax.export import record as rec

FLOAT_SIGNATURE = 'serving_default'
BYTES_SIGNATURE = 'classify'


def export(exportable: rec.Exportable, directory: str, top: int = 5,
           platforms: Sequence[str] = ('cpu',)) -> rec.ModelRecord:
  """Writes the SavedModel to `directory` (with its model.json inside) and returns the record."""
  # deferred: jax2tf imports TensorFlow, loaded only when a SavedModel is written
  from jax.experimental import jax2tf

  # deferred: data/ loads TensorFlow (its preprocessing is TensorFlow ops saved in the graph)
  from inception_jax.data import preprocessing
  tf = tf_import.tensorflow()

  size, top = exportable.image_size, min(top, exportable.num_classes)
  outputs = functools.partial(rec.outputs, exportable.model)  # (variables, images) -> outputs
  converted = jax2tf.convert(outputs, polymorphic_shapes=[None, f'(b, {size}, {size}, 3)'],
                             with_gradient=False, native_serialization_platforms=tuple(platforms))

  module = tf.Module()
  module.variables_ = jax.tree_util.tree_map(lambda v: tf.Variable(v, trainable=False),
                                             exportable.variables)
  module.names = tf.constant(exportable.names)

  @tf.function(autograph=False, input_signature=[
      tf.TensorSpec([None, size, size, 3], tf.float32, name='images')])
  def serve(images):
    return converted(module.variables_, images)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name='encoded')])
  def classify(encoded):
    pixels = tf.map_fn(lambda e: preprocessing.eval_image(e, size), encoded,
                       fn_output_signature=tf.TensorSpec([size, size, 3], tf.uint8))
    probabilities = serve(tf.cast(pixels, tf.float32) / 127.5 - 1.0)['probabilities']
    best = tf.math.top_k(probabilities, k=top)
    return {'classes': best.indices, 'names': tf.gather(module.names, best.indices),
            'probabilities': best.values}

  module.serve, module.classify = serve, classify
  tf.saved_model.save(module, wd.absolute(directory),
                      signatures={FLOAT_SIGNATURE: serve, BYTES_SIGNATURE: classify})
  signatures = {
      FLOAT_SIGNATURE: {'inputs': {'images': 'float32 [N, S, S, 3]'},
                        'outputs': {'logits': 'float32 [N, classes]',
                                    'probabilities': 'float32 [N, classes]'}},
      BYTES_SIGNATURE: {'inputs': {'encoded': 'string [N]: JPEG, PNG, GIF or BMP bytes'},
                        'outputs': {'classes': f'int32 [N, {top}]', 'names': f'string [N, {top}]',
                                    'probabilities': f'float32 [N, {top}]'}}}
  return rec.write(exportable, directory, 'savedmodel', 'saved_model.pb', converter='jax2tf',
                   platforms=list(platforms), signatures=signatures, top=top)
