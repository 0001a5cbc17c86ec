"""Cloud TPU chips and slices as data: each generation's memory, peak and bandwidth, and the
accelerator types (v5e-16, v5p-128, ...) as JAX topologies."""

from __future__ import annotations

import dataclasses
import math

GIB = 2 ** 30


@dataclasses.dataclass(frozen=True)
class Chip:
  """A TPU generation's figures, per chip: the HBM that XLA:TPU lets a program use (what it
  reports as "available HBM" when a program does not fit, libtpu 0.0.42: a little less than the
  HBM fitted, part of which the runtime keeps), the published peak and bandwidth."""
  hbm_gib: float
  peak_bf16_tflops: float
  hbm_gbytes_per_s: float
  cloud_name: str  # the accelerator-type prefix Cloud TPU uses, e.g. v5litepod
  device_kind: str  # what JAX calls its devices


CHIPS = {
    'v4': Chip(30.75, 275, 1200, 'v4', 'TPU v4'),  # 32 GiB fitted
    'v5e': Chip(15.75, 197, 819, 'v5litepod', 'TPU v5 lite'),  # 16 GiB
    'v5p': Chip(95.74, 459, 2765, 'v5p', 'TPU v5'),  # 96 GiB
    'v6e': Chip(31.25, 918, 1640, 'v6e', 'TPU v6 lite'),  # 32 GiB
}


@dataclasses.dataclass(frozen=True)
class Slice:
  """A Cloud TPU slice as JAX's `get_topology_desc` names it."""
  chip: str  # a key of CHIPS
  topology: str  # JAX's topology name, chips per dimension: 'v5e:4x4', 'v5:2x4x4'
  chips_per_host: tuple[int, int, int]
  megacore: bool  # v4 and v5p: one JAX device per chip (two TensorCores)

  @property
  def chips(self) -> int:
    return math.prod(int(n) for n in self.topology.split(':')[1].split('x'))


def _slices() -> dict[str, Slice]:
  """Cloud TPU accelerator types -> JAX topologies. v4-N and v5p-N count TensorCores (two per
  chip); v5e-N (v5litepod-N) and v6e-N count chips. Multi-host slices have 4 chips per host; v5e
  and v6e slices of up to 8 chips are one host."""
  table = {}
  v4 = ('2x2x1', '2x2x2', '2x2x4', '2x4x4', '4x4x4', '4x4x8', '4x4x12', '4x8x8', '8x8x8', '8x8x12',
        '8x8x16', '8x16x16')
  for chip, prefix, shapes in (('v4', 'v4', v4), ('v5p', 'v5', v4 + ('16x16x16', '16x16x24'))):
    for shape in shapes:
      spec = Slice(chip, f'{prefix}:{shape}', (2, 2, 1), True)
      table[f'{chip}-{2 * spec.chips}'] = spec
  for shape in ('1x1', '2x2', '2x4', '4x4', '4x8', '8x8', '8x16', '16x16'):
    rows, cols = (int(n) for n in shape.split('x'))
    per_host = (rows, cols, 1) if rows * cols <= 8 else (2, 2, 1)
    for chip in ('v5e', 'v6e'):
      table[f'{chip}-{rows * cols}'] = Slice(chip, f'{chip}:{shape}', per_host, False)
  return table


SLICES = _slices()
CPU_PREFIX = 'cpu:'


def known_topologies() -> list[str]:
  def order(name):
    chip, count = name.split('-')
    return chip, int(count)
  return sorted(SLICES, key=order) + [f'{CPU_PREFIX}N']
