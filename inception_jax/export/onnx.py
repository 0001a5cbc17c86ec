"""An ONNX model, converted from the JAX function by jax2onnx; run it with onnxruntime:

    import onnxruntime
    session = onnxruntime.InferenceSession('model.onnx')
    logits, probabilities = session.run(None, {'images': images})

Why jax2onnx and not tf2onnx (from the SavedModel or the TFLite model): jax2tf saves the network
as one `XlaCallModule` op (the only serialization jax 0.10 has), which tf2onnx 1.17 cannot convert,
and the TFLite model holds `STABLEHLO_REDUCE_WINDOW` (the average pools), a TFLite builtin that
tf2onnx 1.17 does not know. jax2onnx (0.17.1) pins orbax-checkpoint<0.11.37: with the `export`
extra, pip resolves Orbax 0.11.36, which this project supports (.ci/export runs the tests there).
"""

from __future__ import annotations

import importlib.util

from inception_jax import workdir as wd
from inception_jax.errors import ConfigError, first_line
from inception_jax.export import record as rec

FILE = 'model.onnx'
OPSET = 23
INSTALL = 'pip install -e ".[export]"'


def check_installed() -> None:
  """Raises a ConfigError naming the extra when the converter or onnx is not installed."""
  missing = [m for m in ('jax2onnx', 'onnx') if importlib.util.find_spec(m) is None]
  if missing:
    verb = 'are' if len(missing) > 1 else 'is'
    raise ConfigError(f'--format=onnx needs {" and ".join(missing)}, which {verb} not installed: '
                      f'install the export extra, {INSTALL}.')


def export(exportable: rec.Exportable, directory: str) -> rec.ModelRecord:
  """Writes `directory/model.onnx` (inputs `images`, outputs `logits`, `probabilities`) and its
  model.json; returns the record."""
  check_installed()
  import jax2onnx  # deferred: optional (the export extra), and slow to import

  named = exportable.outputs_fn()
  size = exportable.image_size

  def outputs(images):  # in the order of output_names
    found = named(images)
    return found['logits'], found['probabilities']

  try:
    model = jax2onnx.to_onnx(outputs, [('N', size, size, 3)], model_name=exportable.record.model,
                             opset=OPSET, input_names=['images'],
                             output_names=['logits', 'probabilities'])
  except NotImplementedError as e:  # a JAX primitive that jax2onnx has no plugin for
    raise ConfigError(f'jax2onnx cannot convert {exportable.record.model}: {first_line(e)}; '
                      'export another format (savedmodel, tflite, stablehlo), or try a newer '
                      'jax2onnx.') from e
  # jax2onnx declares some intermediate shapes in its own (NCHW) layout; onnxruntime infers
  # them again from the graph, so the declarations go (onnxruntime warns of each otherwise).
  del model.graph.value_info[:]
  wd.makedirs(directory)
  wd.write_atomically(wd.join(directory, FILE), model.SerializeToString())
  return rec.write(exportable, directory, 'onnx', FILE, converter='jax2onnx', opset=OPSET,
                   inputs={'images': 'float32 [N, S, S, 3]'},
                   outputs={'logits': 'float32 [N, classes]',
                            'probabilities': 'float32 [N, classes]'})
