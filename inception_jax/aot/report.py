"""The report as text (`report_text`): what was compiled, its memory per chip and verdict, the
estimate and the batch search's outcome."""

from __future__ import annotations

from typing import Any

from inception_jax.aot.chips import GIB


def report_text(report: dict[str, Any]) -> str:
  """The report as text."""
  lines = [_job_line(report)]
  if 'error' in report:
    lines += _failure_lines(report)
  else:
    lines += _memory_lines(report) + _estimate_lines(report)
  return '\n'.join(lines + _search_line(report))


def _job_line(report: dict[str, Any]) -> str:
  return (f'{report["model"]} ({report["dtype"]}, {report["layout"]}'
          f'{", remat" if report["remat"] else ""}) on {report["topology"]} '
          f'({report["description"]}): global batch {report["batch_size"]} = '
          f'{report["per_chip_batch"]} per chip, eval batch {report["eval_batch_size"]}, '
          f'{report["image_size"]}x{report["image_size"]} images')


def _failure_lines(report: dict[str, Any]) -> list[str]:
  """A step that did not compile: by how much it does not fit, where XLA says, and its error."""
  lines = []
  if 'required_bytes' in report:
    lines.append(f'does not fit by {-report["spare_bytes"] / GIB:.2f} GiB: XLA needs '
                 f'{report["required_bytes"] / GIB:.2f} GiB of HBM where '
                 f'{report["available_bytes"] / GIB:.2f} GiB are available')
  lines.append(('does not fit' if report.get('out_of_memory') else 'does not compile')
               + f' ({report["compile_s"]:.0f} s of compiling): {report["error"]}')
  return lines


def _memory_lines(report: dict[str, Any]) -> list[str]:
  """Compile times, the memory per chip while training and evaluating, and the verdict."""
  train_memory, evaluation = report['train'], report.get('eval')
  lines = [f'compiled in {train_memory["compile_s"]:.0f} s (train step)' + (
      f', {evaluation["compile_s"]:.0f} s (eval step)' if evaluation else '')]
  gib = lambda key, part=train_memory: f'{part[key] / GIB:.3f}'
  batch = report['train_batch_bytes']
  lines.append(
      f'memory per chip, GiB: arguments {gib("argument_bytes")} (state '
      f'{(train_memory["argument_bytes"] - batch) / GIB:.3f}, batch {batch / GIB:.3f}), outputs '
      f'{gib("output_bytes")} ({gib("alias_bytes")} of them in the donated state\'s buffers), '
      f'temporaries {gib("temp_bytes")}, code {gib("code_bytes")}: {gib("total_bytes")} in all')
  if evaluation:
    lines.append(f'while evaluating: {gib("total_bytes", evaluation)} (the train state, an eval '
                 f'batch, the eval step\'s temporaries {gib("temp_bytes", evaluation)} and both '
                 'steps\' code)')
  verdict = (f'fits ({report["spare_bytes"] / GIB:.2f} GiB to spare)' if report['fits'] else
             f'does not fit by {-report["spare_bytes"] / GIB:.2f} GiB')
  resident = report.get('train_resident_bytes', train_memory['total_bytes'])
  capacity = report['memory_per_chip_bytes'] / GIB
  lines.append(f'peak {report["peak_bytes"] / GIB:.2f} GiB per chip (training: '
               f'{resident / GIB:.2f} with the batches sent ahead and the eval step\'s code) of '
               f'{capacity:.2f} GiB {report["memory_kind"]}: {verdict}')
  return lines


def _estimate_lines(report: dict[str, Any]) -> list[str]:
  """The roofline estimate, flagged too low where the blocks are scanned."""
  guess = report.get('estimate')
  if guess is None:
    return ['estimate: none (no peak FLOP/s and bandwidth figures for this device)']
  return [
      'ESTIMATE (XLA cost analysis + roofline; not a measurement, no interconnect or input '
      'pipeline):',
      *(['  TOO LOW: the blocks are scanned, and XLA counts a loop\'s body once; compile with '
         '--config.model.scan_blocks=False for the estimate']
        if guess.get('undercounted') else []),
      f'  {report["train"]["flops"]:.3g} FLOPs ({guess["flops_per_image"] / 1e9:.1f} GFLOP per '
      f'image) and {report["train"]["bytes_accessed"] or 0:.3g} bytes accessed per chip per '
      'step',
      f'  compute-bound {_ms(guess["compute_bound_s"])}, memory-bound '
      f'{_ms(guess["memory_bound_s"])}: {_ms(guess["step_s"])} per step ({guess["bound"]}-bound)',
      f'  {guess["img_per_s_per_chip"]:,.0f} img/s per chip, {guess["img_per_s"]:,.0f} img/s '
      f'for the slice; {guess["epochs"]:.4g} epochs ({guess["train_steps"]:,.0f} steps) in '
      f'{guess["train_hours"]:.3g} h',
      '  XLA\'s cost model: ' + (f'{_ms(guess["cost_model_step_s"])} per step'
                                 if guess['cost_model_step_s'] is not None
                                 else guess['cost_model_note'])]


def _search_line(report: dict[str, Any]) -> list[str]:
  """The batch search's outcome (none without a search)."""
  if 'searched' not in report:
    return []
  tried = ', '.join(f'{k} {"fits" if v else "no"}' for k, v in report['searched'].items())
  if not report['searched'].get(str(report['per_chip_batch'])):
    return [f'search stopped at {report["per_chip_batch"]} per chip; tried {tried}']
  return [f'largest per-chip batch whose train step fits (to {report["batch_step"]} images): '
          f'{report["per_chip_batch"]}' + (
              ' (the most the search tries: the training examples or its limit)'
              if report.get('at_limit') else '') + f'; tried {tried}']


def _ms(seconds: float) -> str:
  return f'{seconds * 1e3:.3g} ms'
