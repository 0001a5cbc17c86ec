"""A TensorFlow Lite (LiteRT) model, converted from the SavedModel's float signature.

`tf.lite.TFLiteConverter.from_saved_model` legalizes the StableHLO that jax2tf saved: float32, or
with `int8` dynamic-range quantization (`tf.lite.Optimize.DEFAULT`: int8 weights, activations
quantized on the fly; inputs and outputs stay float32). Run it with LiteRT:

    from ai_edge_litert.interpreter import Interpreter
    runner = Interpreter(model_path='model.tflite').get_signature_runner()
    outputs = runner(images=images)  # {'logits', 'probabilities'}
"""

from __future__ import annotations

from inception_jax import tf_import, workdir as wd
from inception_jax.export import record as rec
from inception_jax.export.savedmodel import FLOAT_SIGNATURE

FILE = 'model.tflite'


def export(exportable: rec.Exportable, directory: str, saved_model: str,
           int8: bool = False) -> rec.ModelRecord:
  """Converts the SavedModel at `saved_model` to `directory/model.tflite`; returns the record."""
  tf = tf_import.tensorflow()
  converter = tf.lite.TFLiteConverter.from_saved_model(wd.absolute(saved_model),
                                                       signature_keys=[FLOAT_SIGNATURE])
  if int8:
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  model = converter.convert()
  wd.makedirs(directory)
  wd.write_atomically(wd.join(directory, FILE), model)
  return rec.write(exportable, directory, 'tflite_int8' if int8 else 'tflite', FILE,
                   converter='tf.lite.TFLiteConverter.from_saved_model',
                   quantization='dynamic-range int8 weights' if int8 else None,
                   signature=FLOAT_SIGNATURE,
                   inputs={'images': 'float32 [N, S, S, 3]'},
                   outputs={'logits': 'float32 [N, classes]',
                            'probabilities': 'float32 [N, classes]'})
