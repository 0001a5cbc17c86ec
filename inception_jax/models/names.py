"""TF-slim's naming of the networks' scopes, shared by the models and the weight converters."""

from __future__ import annotations

# The scopes of the main classifier and of the auxiliary head (its own classifier's name differs
# by network: `InceptionNetwork.aux_names`).
LOGITS = 'Logits'
AUX_LOGITS = 'AuxLogits'


def lettered(prefix: str, count: int) -> list[str]:
  """TF-slim's names for a run of blocks: Mixed_5b, Mixed_5c, ..."""
  return [f'{prefix}{chr(ord("b") + i)}' for i in range(count)]


def numbered(prefix: str, count: int) -> tuple[str, ...]:
  """TF-slim's `slim.repeat` names: block35_1, block35_2, ..."""
  return tuple(f'{prefix}_{i + 1}' for i in range(count))
