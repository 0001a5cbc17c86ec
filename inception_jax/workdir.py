"""A workdir's layout, and the storage every path of the project goes through (local disk or an
object store such as gs://).

Layout of a training workdir:

    WORKDIR/checkpoints/<step>/      Orbax checkpoints (`CHECKPOINTS`); unreadable ones are moved to
    WORKDIR/checkpoints_corrupt/     (`CORRUPT`)
    WORKDIR/model.json               which network the checkpoints hold (`MODEL_INFO`)
    WORKDIR/metrics.jsonl            one JSON object per log or eval event (`METRICS`)
    WORKDIR/events.out.tfevents.*    TensorBoard scalars (`EVENTS`)
    WORKDIR/evaluation.json          `python -m inception_jax.evaluate`'s records (`EVALUATION`)
    WORKDIR/lease.json               which job holds the workdir (`LEASE`)

Storage: `etils.epath`, the layer that Orbax and TFDS use as well, so one setting reaches all of
them. For object stores (gs://, s3://, ...) it goes through fsspec (gcsfs for gs://), not through
TensorFlow's gfile: `import inception_jax` sets `EPATH_USE_TF=false` (`inception_jax.tf_import`; a
value set in the environment wins). fsspec honours `STORAGE_EMULATOR_HOST`, TensorStore (Orbax's
arrays) `TENSORSTORE_GCS_HTTP_URL`, and ArrayRecord (TFDS's prepared data)
`CLOUD_STORAGE_EMULATOR_ENDPOINT`: `use_emulator(url)` sets all three, so a GCS API server on
127.0.0.1 (fake-gcs-server) stands in for Cloud Storage in the tests.
"""

from __future__ import annotations

import os
import re
from typing import Optional

from etils import epath
import fsspec

from inception_jax.errors import ConfigError, MissingError, UserError, first_line

CHECKPOINTS = 'checkpoints'
CORRUPT = 'checkpoints_corrupt'
MODEL_INFO = 'model.json'
METRICS = 'metrics.jsonl'
EVENTS = 'events.out.tfevents.*'
EVALUATION = 'evaluation.json'
LEASE = 'lease.json'
# Orbax marks a checkpoint finished on object stores (where it writes in place) with this file.
COMMIT_MARKER = 'commit_success.txt'

# The environment variables through which each layer reaches a GCS API server other than Google's.
EMULATOR_VARIABLES = ('STORAGE_EMULATOR_HOST',  # fsspec/gcsfs and Google's Python clients
                      'TENSORSTORE_GCS_HTTP_URL',  # TensorStore: Orbax's arrays
                      'CLOUD_STORAGE_EMULATOR_ENDPOINT')  # google-cloud-cpp: ArrayRecord files
# The URL schemes that epath reaches (through fsspec; gs:// with gcsfs, s3:// with s3fs, ...).
SCHEMES = ('gs', 's3', 'az', 'hf')
CREDENTIALS_FIX = ('log in with `gcloud auth application-default login`, or set '
                   'GOOGLE_APPLICATION_CREDENTIALS to a service account\'s key file (on a Cloud '
                   'VM or TPU: give it a service account)')
# fsspec's clients read listings afresh: a workdir is written by other processes too (the job
# that an evaluation or a plot follows, another host), and a cached listing would miss their steps.
for _scheme in ('gs', 's3'):
  fsspec.config.conf.setdefault(_scheme, {}).setdefault('use_listings_cache', False)
_SCHEME = re.compile(r'^([a-zA-Z][a-zA-Z0-9+.-]*)://')


def scheme(path: str) -> Optional[str]:
  """'gs' for 'gs://bucket/dir', None for a local path."""
  found = _SCHEME.match(os.fspath(path))
  return found[1].lower() if found else None


def is_remote(path: str) -> bool:
  """Whether `path` is a URL (gs://, s3://, ...) rather than a local path."""
  return scheme(path) is not None


def absolute(path: str) -> str:
  """`path` made absolute: a local path against the working directory (and `~` expanded), a URL
  left as it is (but for a trailing slash)."""
  path = os.fspath(path)
  if is_remote(path):
    return path.rstrip('/') if path.rstrip('/') != f'{scheme(path)}:/' else path
  return os.path.abspath(os.path.expanduser(path))


def join(*parts: str) -> str:
  return os.path.join(*(os.fspath(p) for p in parts))


def path(p: str) -> epath.Path:
  """The `etils.epath.Path` of `p` (local or URL)."""
  return epath.Path(os.fspath(p))


def checkpoints(workdir: str) -> str:
  return join(absolute(workdir), CHECKPOINTS)


def step_dir(workdir: str, step: int) -> str:
  return join(checkpoints(workdir), str(step))


def owner(step: str) -> Optional[str]:
  """The workdir of `step` where it is one of its checkpoints (`WORKDIR/checkpoints/N`)."""
  parent = os.path.dirname(absolute(step))
  return os.path.dirname(parent) if os.path.basename(parent) == CHECKPOINTS else None


def corrupt(workdir: str) -> str:
  return join(absolute(workdir), CORRUPT)


def finished_steps(directory: str) -> list[int]:
  """The finished checkpoint steps in `directory` (a workdir's `checkpoints/`), in order: the
  sub-directories named by a number (an unfinished save has a temporary name) which, on object
  stores, hold Orbax's commit marker. [] where `directory` does not exist."""
  root = path(directory)
  if not root.is_dir():
    return []
  steps = [int(child.name) for child in root.iterdir() if child.name.isdigit()]
  if is_remote(directory):
    steps = [s for s in steps if (root / str(s) / COMMIT_MARKER).exists()]
  return sorted(steps)


def latest_step(workdir: str) -> Optional[int]:
  """The newest finished checkpoint step of `workdir`, None when it has none."""
  steps = finished_steps(checkpoints(workdir))
  return steps[-1] if steps else None


def exists(p: str) -> bool:
  return path(p).exists()


def isdir(p: str) -> bool:
  return path(p).is_dir()


def makedirs(p: str) -> None:
  path(p).mkdir(parents=True, exist_ok=True)


def glob(directory: str, pattern: str) -> list[str]:
  return sorted(os.fspath(p) for p in path(directory).glob(pattern))


def read_text(p: str) -> str:
  return path(p).read_text()


def read_bytes(p: str) -> bytes:
  return path(p).read_bytes()


def write_atomically(p: str, data: str | bytes) -> None:
  """Writes `data` to `p` so that a reader sees the old version or the new one, never a part:
  locally through a temporary file renamed over `p` (a crash or a full disk mid-write leaves the
  previous version and no temporary file); on object stores in one upload, which is atomic
  there."""
  target = path(p)
  if is_remote(p):
    (target.write_bytes if isinstance(data, bytes) else target.write_text)(data)
    return
  temporary = path(f'{p}.tmp')
  try:
    (temporary.write_bytes if isinstance(data, bytes) else temporary.write_text)(data)
    temporary.replace(target)
  except BaseException:
    try:
      temporary.unlink()
    except Exception:  # pylint: disable=broad-except  (never written, or gone)
      pass
    raise


def remove(p: str) -> None:
  path(p).unlink()


def move(source: str, target: str) -> None:
  """Moves a file or a directory tree (on object stores: copied, then removed)."""
  source_path, target_path = path(source), path(target)
  if is_remote(source):  # no directories, no renames: each object copied, then removed
    if source_path.is_dir():
      for child in source_path.iterdir():
        move(os.fspath(child), os.fspath(target_path / child.name))
      source_path.rmtree(missing_ok=True)
    else:
      target_path.write_bytes(source_path.read_bytes())
      source_path.unlink()
    return
  target_path.parent.mkdir(parents=True, exist_ok=True)
  source_path.rename(target_path)


def check(p: Optional[str], flag: str) -> None:
  """Fails at once, naming `flag`, where the URL `p` cannot work: a scheme with no storage
  backend, gs:// without credentials, a bucket that does not exist (a missing bucket, or missing
  credentials, would otherwise surface as retries for minutes, or as a hang in ArrayRecord's
  reader). Local paths, and what a path holds, are left to the callers."""
  kind = p and scheme(p)
  if not kind:
    return
  if kind not in SCHEMES:
    raise ConfigError(f'{flag}={p}: {kind}:// is no storage this project reaches; pass a local '
                      'path or a gs:// URL (or s3://, az:// with their fsspec package).')
  try:
    fsspec.get_filesystem_class(kind)
  except ImportError as e:
    raise ConfigError(f'{flag}={p}: {e}.') from None
  if kind == 'gs' and not emulated():
    # deferred: Google auth loads only for a gs:// path
    import google.auth
    from google.auth import exceptions
    try:
      google.auth.default()
    except exceptions.DefaultCredentialsError as e:
      raise ConfigError(f'{flag}={p}: no Google Cloud credentials to reach it '
                        f'({first_line(e, 120)}): {CREDENTIALS_FIX}.') from None
  bucket = f'{kind}://{p[len(kind) + 3:].split("/")[0]}'
  try:
    found = path(bucket).exists()
  except Exception as e:  # pylint: disable=broad-except  (permissions, network)
    raise UserError(f'{flag}={p}: cannot reach {bucket} ({first_line(e)}).') from None
  if not found:
    raise MissingError(f'{flag}={p}: the bucket {bucket} does not exist (or these credentials '
                       'cannot see it); create it, or name another.')


def copy_tree(source: str, target: str, last: tuple[str, ...] = ()) -> None:
  """Copies the files under `source` to `target` (local or object stores), the files named in
  `last` after the others (a marker that the copy is whole)."""
  def files(directory: epath.Path) -> list[epath.Path]:
    children = list(directory.iterdir())
    return [c for c in children if not c.is_dir()] + [
        f for c in children if c.is_dir() for f in files(c)]
  root = path(source)
  for file in sorted(files(root), key=lambda f: (f.name in last, os.fspath(f))):
    destination = path(target) / os.path.relpath(os.fspath(file), os.fspath(root))
    destination.parent.mkdir(parents=True, exist_ok=True)
    destination.write_bytes(file.read_bytes())


def use_emulator(url: str, environ: Optional[dict] = None) -> dict[str, str]:
  """Points every storage layer at the GCS API server at `url` ('http://127.0.0.1:4443'): sets
  `EMULATOR_VARIABLES` in `environ` (default: this process's environment, for the processes it
  starts as well) and returns them. Takes effect for clients created afterwards."""
  environ = os.environ if environ is None else environ
  values = dict.fromkeys(EMULATOR_VARIABLES, url.rstrip('/'))
  # gcsfs's probe of a bucket's type is a gRPC call to Google's control plane, which an emulator
  # lacks (retried for about 40 s); read when gcsfs is imported.
  values['GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT'] = 'false'
  environ.update(values)
  return values


def emulated() -> Optional[str]:
  """The GCS API server's address where `use_emulator` (or the user) set one, else None."""
  return os.environ.get('STORAGE_EMULATOR_HOST') or None
