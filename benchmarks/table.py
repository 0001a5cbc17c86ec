"""Turns the JSON lines of train_step.py / inference.py, or of `python -m inception_jax.aot --json`
(benchmarks/tpu_table.sh), into a Markdown table.

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


def aot_table(records) -> str:
  """The compile reports: fit per chip and the roofline estimate (an estimate, not a
  measurement)."""
  rows = ['| model | slice | batch per chip | peak GiB / HBM | compile s | GFLOP/img '
          '| est. ms/step | est. img/s per chip | est. img/s per slice | est. h for the epochs |',
          '|' + '---|' * 10]
  for r in records:
    guess = r.get('estimate') or {}
    searched = f' (largest, step {r["batch_step"]})' if 'searched' in r else ''
    peak = 'does not fit' if not r['fits'] else (
        f'{r["peak_bytes"] / 2**30:.2f} / {r["memory_per_chip_bytes"] / 2**30:.0f}')
    train = r.get('train', {})
    rows.append(
        f'| {r["model"]} ({r["dtype"]}, {r["layout"]}) | {r["topology"]} ({r["chips"]} chips) '
        f'| {r["per_chip_batch"]}{searched} | {peak} | {fmt(train.get("compile_s"), ".0f")} '
        f'| {fmt(guess.get("flops_per_image"), ".1f", 1e-9)} '
        f'| {fmt(guess.get("step_s"), ".0f", 1e3)} ({guess.get("bound", "n/a")}) '
        f'| {fmt(guess.get("img_per_s_per_chip"), ",.0f")} | {fmt(guess.get("img_per_s"), ",.0f")} '
        f'| {fmt(guess.get("train_hours"), ".1f")} ({fmt(guess.get("epochs"), ".0f")}) |')
  return '\n'.join(rows)


def main() -> None:
  lines = open(sys.argv[1]) if len(sys.argv) > 1 else sys.stdin
  records = [json.loads(line) for line in lines if line.startswith('{')]
  print(aot_table(records) if records and 'topology' in records[0] else table(records))


if __name__ == '__main__':
  main()
