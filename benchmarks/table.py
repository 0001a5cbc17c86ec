"""Turns the JSON lines of train_step.py / inference.py into a Markdown table.

    grep '^{' LOG | python benchmarks/table.py > table.md    (or: python benchmarks/table.py FILE)
"""

import json
import sys


def fmt(value, spec='.1f', scale=1.0, suffix=''):
  return 'n/a' if value is None else f'{value * scale:{spec}}{suffix}'


def table(records) -> str:
  rows = ['| model | step | batch | size | dtype | layout | device | compile s | img/s '
          '| timm img/s | ours/timm | peak mem GiB (ours / timm) | GFLOP/img | MFU |',
          '|' + '---|' * 14]
  for r in records:
    memory = f'{fmt(r.get("peak_memory_bytes"), ".2f", 2**-30)} / ' \
             f'{fmt(r.get("timm_peak_memory_bytes"), ".2f", 2**-30)}'
    rows.append(
        f'| {r["model"]} | {r["step"]} | {r["batch"]} | {r["image_size"]} | {r["dtype"]} '
        f'| {r["layout"]} | {r["device"]} | {fmt(r["compile_s"])} | {fmt(r["img_per_s"])} '
        f'| {fmt(r.get("timm_img_per_s"))} | {fmt(r.get("ratio"), ".2f")} | {memory} '
        f'| {fmt(r["model_flops_per_image"], ".1f", 1e-9)} '
        f'| {fmt(r.get("mfu"), ".1f", 100, "%")} |')
  return '\n'.join(rows)


def main() -> None:
  lines = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
  print(table([json.loads(line) for line in lines if line.startswith('{')]))


if __name__ == '__main__':
  main()
