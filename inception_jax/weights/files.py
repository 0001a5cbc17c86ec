"""Which kind of weights file a path holds, told by its bytes rather than its name, so that a file
given to another source's reader is an error naming the source that reads it."""

from __future__ import annotations

import os
import re
from typing import Optional
import zipfile

from inception_jax.weights.layout import FileFormatError

# TensorFlow's sorted-table files (TF1 checkpoints of either version, and the `.index` of V2 ones)
# end in this number, little-endian.
TF_TABLE_MAGIC = (0xdb4775248b80fb57).to_bytes(8, 'little')
HDF5_MAGIC = b'\x89HDF\r\n\x1a\n'
TF_SHARD = re.compile(r'\.(index|data-\d{5}-of-\d{5})$')
# Per format: what it is in words, and the source that reads it (None: no source does).
FORMATS = {
    'safetensors': ('a .safetensors file', 'timm'),
    'torch': ('a PyTorch file', 'timm'),
    'keras': ('a .keras model', 'keras'),
    'hdf5': ('a Keras HDF5 (.h5) file', 'keras'),
    'tf': ('a TensorFlow checkpoint', 'slim'),
    'zip': ('a zip archive', None),
    'directory': ('a directory', None),
}


def tf_prefix(path: str) -> str:
  """A TF2-style checkpoint's prefix from the name of one of its files (`x.ckpt.index` or
  `x.ckpt.data-00000-of-00001` -> `x.ckpt`); other paths unchanged."""
  prefix = TF_SHARD.sub('', path)
  return prefix if prefix != path and os.path.exists(prefix + '.index') else path


def _zip_format(path: str) -> str:
  try:
    with zipfile.ZipFile(path) as archive:
      names = archive.namelist()
  except zipfile.BadZipFile:
    return 'zip'
  if any(n == 'data.pkl' or n.endswith('/data.pkl') for n in names):
    return 'torch'  # torch.save's archive
  return 'keras' if 'config.json' in names and 'model.weights.h5' in names else 'zip'


def file_format(path: str) -> Optional[str]:
  """One of `FORMATS`, or None for a file of none of them. Raises OSError for a path that cannot be
  read (FileNotFoundError for one that does not exist)."""
  if os.path.isdir(path):
    tf = any(f == 'checkpoint' or f.endswith('.index') for f in os.listdir(path))
    return 'tf' if tf else 'directory'
  if TF_SHARD.search(path) or (not os.path.exists(path) and os.path.exists(path + '.index')):
    return 'tf'
  with open(path, 'rb') as f:
    head = f.read(16)
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(max(size - 8, 0))
    tail = f.read(8)
  if head.startswith(HDF5_MAGIC):
    return 'hdf5'
  if head.startswith(b'PK\x03\x04'):
    return _zip_format(path)
  if head[:1] == b'\x80':
    return 'torch'  # a pickle: torch.save's legacy format
  if head[8:9] == b'{' and 8 + int.from_bytes(head[:8], 'little') <= size:
    return 'safetensors'  # a little-endian header length, then the JSON header
  return 'tf' if tail == TF_TABLE_MAGIC else None


def wrong_format(path: str, found: Optional[str], reads: str) -> FileFormatError:
  """The error for `path`, of format `found`, given to a reader of `reads` (in words)."""
  if found is None:
    return FileFormatError(f'{path} is not {reads}, nor a file that another source reads.')
  what, source = FORMATS[found]
  fix = f': convert it with --source={source} (weights.from_{source})' if source else ''
  return FileFormatError(f'{path} is {what}, not {reads}{fix}.', source)
