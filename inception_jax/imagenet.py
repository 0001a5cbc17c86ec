"""The 1000 ImageNet (ILSVRC-2012) classes: WordNet IDs and human-readable names, in the order of
every 1000-way head (timm, Keras, TFDS, `from_slim(background='drop')`): sorted by WordNet ID.

`imagenet_classes.tsv` lists `<wnid>\t<WordNet lemmas>`; the lemmas are WordNet 3.0's, as
distributed with timm's class metadata.
"""

from __future__ import annotations

import functools
import importlib.resources

BACKGROUND = 'background'
# How a checkpoint's model.json names these classes: the 1000, or TF-slim's 1001.
RECORDS = {1000: 'imagenet', 1001: 'imagenet+background'}


@functools.cache
def _table() -> tuple[tuple[str, str], ...]:
  text = importlib.resources.files('inception_jax').joinpath('imagenet_classes.tsv').read_text()
  return tuple(tuple(line.split('\t', 1)) for line in text.splitlines() if line)


def wnids() -> list[str]:
  return [wnid for wnid, _ in _table()]


def short_names(background: bool = False) -> list[str]:
  """Short names (the first WordNet lemma: 'tench', 'goldfish', ...), 1000 of them, or 1001 with
  TF-slim's background class first."""
  names = [lemmas.split(', ')[0] for _, lemmas in _table()]
  return [BACKGROUND, *names] if background else names
