"""The job reads a batch of prepared records in one call (`tfds_sources._reader`): the records of
one-at-a-time reads, in the same order, from local disk and from a bucket (the GCS emulator), and
from a slow bucket in a few round trips, not one a record."""

import time

import numpy as np
import pytest

from benchmarks import gcs_proxy
from benchmarks.input_pipeline import prepare_fake_imagenet
from inception_jax import workdir
from inception_jax.data import tfds_sources

LATENCY_S = 0.05


@pytest.fixture(scope='module')
def prepared(tmp_path_factory):
  """Fake imagenet2012 prepared on local disk: 48 small JPEGs in 3 files."""
  data_dir = str(tmp_path_factory.mktemp('data'))
  prepare_fake_imagenet(data_dir, images=48, shards=3, detail=(6, 8), size=(48, 64))
  return data_dir


@pytest.fixture(scope='module')
def in_bucket(prepared, gcs_emulator):
  """The same files in a bucket."""
  url = f'{gcs_emulator.bucket()}/data'
  gcs_proxy.upload(prepared, url, gcs_emulator.url)
  return url


def train_records(data_dir):
  return tfds_sources._data_source('imagenet2012', 'train', data_dir)  # noqa: SLF001


def batch(size, seed=0):
  """Indices as the stream draws them (a permutation's rows), over all files, a repeat too."""
  indices = np.random.default_rng(seed).permutation(48)[:size]
  return np.concatenate([indices, indices[:1]])


@pytest.mark.parametrize('where', ['local', 'bucket'])
def test_a_batch_is_the_records_one_at_a_time_in_order(where, prepared, request):
  data_dir = prepared if where == 'local' else request.getfixturevalue('in_bucket')
  records = train_records(data_dir)
  local = train_records(prepared)
  indices = batch(32)
  images, labels, valid = tfds_sources._reader(records)(indices)  # noqa: SLF001
  one_by_one = [local[int(i)] for i in indices]
  assert images == [r['image'] for r in one_by_one]
  assert list(labels) == [r['label'] for r in one_by_one] and valid.tolist() == [1] * 33
  assert len(set(images)) == 32  # distinct images: a wrong order would show


def test_a_batch_from_a_slow_bucket_waits_a_few_round_trips(in_bucket, gcs_emulator,
                                                            monkeypatch):
  """Each request to the bucket is held LATENCY_S: 33 records read one at a time would wait at
  least 33 times that; batched reads overlap the waits (a behaviour, not a speed target)."""
  with gcs_proxy.DelayingProxy(gcs_emulator.url, LATENCY_S) as proxy:
    for name, value in workdir.use_emulator(proxy.url, {}).items():
      monkeypatch.setenv(name, value)
    read = tfds_sources._reader(train_records(in_bucket))  # noqa: SLF001
    read(batch(32, seed=1))  # opens every file
    before = proxy.requests
    start = time.perf_counter()
    images, _, _ = read(batch(32))
    elapsed = time.perf_counter() - start
    assert proxy.requests - before >= 32  # through the proxy, a request a record at least
  assert len(images) == 33
  assert elapsed < 16 * LATENCY_S, f'{elapsed:.2f} s for 33 records'
