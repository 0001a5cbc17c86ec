"""Exports a checkpoint for serving: SavedModel, TFLite, ONNX and StableHLO.

    python -m inception_jax.export --checkpoint=DIR --output=OUT --format=savedmodel,tflite

Each format goes to its own directory, with a `model.json` beside the file (the checkpoint's
`ModelRecord` plus `export`: format, converter, inputs, outputs, class names, preprocessing):

    OUT/savedmodel/    saved_model.pb, variables/: signatures `serving_default` (float images ->
                       logits, probabilities) and `classify` (JPEG/PNG bytes -> top classes)
    OUT/tflite/        model.tflite, float32 (LiteRT)
    OUT/tflite_int8/   model.tflite, dynamic-range int8 weights
    OUT/onnx/          model.onnx (onnxruntime)
    OUT/stablehlo/     model.stablehlo: a serialized jax.export.Exported (JAX alone reloads it)

Every float input is [N, S, S, 3] in [-1, 1] with N free: the evaluation preprocessing of
`python -m inception_jax.predict` (`record.PREPROCESSING`).
"""

from __future__ import annotations

import tempfile
from typing import Iterable, Optional, Sequence

from inception_jax import workdir as wd
from inception_jax.errors import ConfigError
from inception_jax.export import onnx, record as rec, savedmodel, stablehlo, tflite

FORMATS = ('savedmodel', 'tflite', 'tflite_int8', 'onnx', 'stablehlo')


def parse_formats(formats: Iterable[str], tflite_int8: bool = False) -> list[str]:
  """The formats named (in FORMATS' order, once each); `tflite_int8` adds the int8 TFLite one."""
  names = [f.strip().lower() for f in formats if f.strip()]
  unknown = [f for f in names if f not in FORMATS]
  if unknown or not names:
    given = f'{", ".join(unknown)}: no such format' if unknown else 'no format given'
    raise ConfigError(f'--format: {given}: pass one or more of {",".join(FORMATS)} (e.g. '
                      '--format=savedmodel,tflite).')
  if tflite_int8:
    names.append('tflite_int8')
  return [f for f in FORMATS if f in names]


def check_installed(formats: Sequence[str]) -> None:
  """Raises a ConfigError naming what to install when a converter of `formats` is missing."""
  if 'onnx' in formats:
    onnx.check_installed()

def export(checkpoint: str, output: str, formats: Sequence[str], *, params: str = 'ema',
           model: Optional[str] = None, top: int = 5,
           platforms: Sequence[str] = ('cpu',)) -> dict[str, object]:
  """Exports `checkpoint` to `output/<format>/` for each of `formats` (FORMATS); returns
  {format: the ModelRecord written beside it}. `top`: the classes the SavedModel's bytes signature
  returns; `platforms`: what the SavedModel's and StableHLO's programs are lowered for."""
  formats = parse_formats(formats)
  check_installed(formats)
  exportable = rec.load(checkpoint, params, model)
  records = {}
  if 'stablehlo' in formats:
    records['stablehlo'] = stablehlo.export(exportable, wd.join(output, 'stablehlo'), platforms)
  if 'onnx' in formats:
    records['onnx'] = onnx.export(exportable, wd.join(output, 'onnx'))
  if 'savedmodel' in formats:
    records['savedmodel'] = savedmodel.export(exportable, wd.join(output, 'savedmodel'), top,
                                              platforms)
  lite = [f for f in formats if f.startswith('tflite')]
  if lite:
    with tempfile.TemporaryDirectory(prefix='inception_jax_export_') as scratch:
      # TFLite converts a SavedModel lowered for CPU alone: the one just written, else its own.
      source = wd.join(output, 'savedmodel')
      if 'savedmodel' not in formats or tuple(platforms) != ('cpu',):
        source = scratch
        savedmodel.export(exportable, source, top, ('cpu',))
      for fmt in lite:
        records[fmt] = tflite.export(exportable, wd.join(output, fmt), source,
                                     int8=fmt == 'tflite_int8')
  return {f: records[f] for f in formats}
