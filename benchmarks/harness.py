"""What train_step.py and inference.py share: arguments, our model and timm's, interleaved timing,
memory, FLOPs and MFU, and the report (a table, then one JSON object per configuration).
compile_time.py shares the model arguments and the training step.

Timing: after warm-up, `--runs` timed runs of `--iters` calls each; within every run the
implementations take turns (the order alternates from run to run), so drift of the machine's speed
hits both alike; each turn starts with `--turn_warmup` untimed calls. Images/s are medians over the
runs; `ratio` is ours/timm of the medians.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import statistics
import sys
import time
from typing import Any, Callable, Optional

# The GPU is shared with PyTorch in --compare_timm runs: JAX must not grab 75% of it up front.
os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE_CHOSEN = 'JAX_COMPILATION_CACHE_DIR' in os.environ  # before inception_jax sets its default
from inception_jax import startup  # noqa: E402

startup.start()  # what the training job uses; INCEPTION_JAX_XLA_DEFAULTS=0 measures without

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

# The benchmarks report compile times: none may come from the persistent compilation cache that
# inception_jax turns on by default (a cache directory chosen in the environment stays in use).
if not CACHE_CHOSEN:
  jax.config.update('jax_enable_compilation_cache', False)

from configs import default  # noqa: E402
from inception_jax import aot, optim, steps  # noqa: E402
from inception_jax.models import create  # noqa: E402
from inception_jax.models.summary import count_macs  # noqa: E402

# Dense bfloat16 peak TFLOP/s by device kind (vendor data sheets; SXM parts).
# Dense bfloat16 peaks by (part of) the device kind; TPUs' are in inception_jax.aot.CHIPS.
GPU_PEAK_BF16_TFLOPS = {'H100': 989.0, 'H200': 989.0, 'A100': 312.0, 'L4': 121.0}


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
  """--model and the options that scale it down (read by `model_and_config`)."""
  parser.add_argument('--model', default='inception_resnet_v2', help='a name from list_models()')
  parser.add_argument('--depth_multiplier', type=float, default=1.0,
                      help='narrower variants (tests use tiny ones)')
  parser.add_argument('--repeats', default=None, help='blocks per grid, e.g. 1,1,1 (default: all)')
  parser.add_argument('--bn_folded', action='store_true',
                      help='BatchNorm as one multiply-add per element (config.model.bn_folded)')


def arguments(description: str) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=description)
  add_model_arguments(parser)
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--image_size', type=int, default=299)
  parser.add_argument('--dtype', default='float32', choices=('float32', 'bfloat16'))
  parser.add_argument('--unrolled', action='store_true',
                      help='unroll the blocks instead of scanning them (the training default)')
  parser.add_argument('--runs', type=int, default=5, help='timed runs; the median is reported')
  parser.add_argument('--iters', type=int, default=3, help='calls per timed run')
  parser.add_argument('--warmup', type=int, default=2, help='untimed calls before timing')
  parser.add_argument('--turn_warmup', type=int, default=1,
                      help='untimed calls at the start of every turn (see interleaved())')
  parser.add_argument('--peak_tflops', type=float, default=None,
                      help='peak FLOP/s of the device in TFLOP/s, for MFU; known GPUs/TPUs default '
                           'to their dense bfloat16 peak')
  parser.add_argument('--compare_timm', action='store_true',
                      help="time timm's same model in the same process (needs torch and timm)")
  parser.add_argument('--timm_compile', action='store_true',
                      help='run timm under torch.compile (default: eager, as most users run it)')
  parser.add_argument('--compare_diagnostics', action='store_true',
                      help='training: also time the step without the dying-network diagnostics '
                           '(on by default for the Inception-ResNets), taking turns')
  parser.add_argument('--trainable_scopes', default=None,
                      help='training: also time the step that trains only these scopes '
                           '(config.trainable_scopes, e.g. Logits: a linear probe), taking turns '
                           'with the full step')
  parser.add_argument('--json', action='store_true',
                      help='end with one JSON object per measured configuration')
  args = parser.parse_args()
  missing = [m for m in ('torch', 'timm') if importlib.util.find_spec(m) is None]
  if args.compare_timm and missing:
    parser.error(f'--compare_timm needs torch and timm installed; missing: {", ".join(missing)}.')
  if args.compare_timm and (args.depth_multiplier != 1.0 or args.repeats):
    parser.error("--compare_timm times timm's full network; drop --depth_multiplier and --repeats.")
  return args


def model_and_config(args, **model_fields):
  """`args.model` and its ImageNet config, `config.model` holding `model_fields` and the options of
  `add_model_arguments`."""
  config = default.for_model(args.model)
  config.model.update(depth_multiplier=args.depth_multiplier, bn_folded=args.bn_folded,
                      **model_fields)
  if args.repeats:
    config.model.repeats = tuple(int(r) for r in args.repeats.split(','))
  return create(args.model, **steps.options_from_config(config, num_classes=1000)), config


def training(model, config, size: int):
  """The training job's own step with the paper's optimizer, jitted with the state donated, and a
  function that makes its initial state (to run under `jax.jit` or `jax.eval_shape`)."""
  schedule = optim.learning_rate_schedule(config, steps_per_epoch=1000)
  tx = optim.make_optimizer(config, schedule)
  step = functools.partial(steps.train_step, model=model, tx=tx, schedule=schedule, config=config)
  init = lambda: steps.create_train_state(steps.init_variables(model, (size, size, 3), 0), tx,
                                          steps.diagnostics_for(model, config))
  return jax.jit(step, donate_argnums=0), init


def compile_timed(fn, *args):
  """`fn` (jitted) lowered and compiled for `args` (arrays or shapes), and the seconds it took."""
  start = time.perf_counter()
  compiled = fn.lower(*args).compile()
  return compiled, time.perf_counter() - start


def ours(args, train: bool, diagnostics: Optional[bool] = None,
         trainable_scopes: Optional[str] = None):
  """Our jitted step (training: the job's own `train_step`, with `config.diagnostics` =
  `diagnostics` and `config.trainable_scopes` = `trainable_scopes`; else an eval-mode forward)
  with its inputs: returns (model, call, compile_s, compiled, the diagnostics it records)."""
  model, config = model_and_config(args, dtype=args.dtype, scan_blocks=not args.unrolled)
  config.batch_size = args.batch
  config.diagnostics = diagnostics
  config.trainable_scopes = trainable_scopes
  size = args.image_size
  rng = np.random.default_rng(0)
  batch = {'image': jnp.asarray(rng.integers(0, 256, (args.batch, size, size, 3), np.uint8)),
           'label': jnp.asarray(rng.integers(0, 1000, (args.batch,), np.int32))}
  if train:
    step, init = training(model, config, size)
    state = jax.jit(init)()
    compiled, compile_s = compile_timed(step, state, batch)
    holder = [state]

    def call():
      holder[0] = compiled(holder[0], batch)
      return holder[0].step
  else:
    variables = jax.jit(lambda: steps.init_variables(model, (size, size, 3), 0))()
    fn = jax.jit(lambda v, x: model.apply(v, steps.normalize(x, model.dtype), train=False))
    compiled, compile_s = compile_timed(fn, variables, batch['image'])

    def call():
      return compiled(variables, batch['image'])
  return model, call, compile_s, compiled, steps.diagnostics_for(model, config) if train else ()


def jax_sync(out) -> None:
  jax.block_until_ready(out)


def timm_step(args, train: bool):
  """timm's same model and, for training, torch's RMSprop at the paper's settings: returns
  (call, sync, peak_memory)."""
  import timm
  import torch

  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  model = timm.create_model(args.model, pretrained=False, num_classes=1000).to(device)
  if device == 'cuda':
    model = model.to(memory_format=torch.channels_last)
  model.train(train)
  size = args.image_size
  x = torch.randn(args.batch, 3, size, size, device=device)
  if device == 'cuda':
    x = x.to(memory_format=torch.channels_last)
  y = torch.randint(0, 1000, (args.batch,), device=device)
  autocast = lambda: torch.autocast(device, dtype=torch.bfloat16,
                                    enabled=args.dtype == 'bfloat16')
  forward = torch.compile(model) if args.timm_compile else model
  if train:
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.045, alpha=0.9, eps=1.0,
                                    momentum=0.9, weight_decay=4e-5)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)

    def call():
      with autocast():
        loss = criterion(forward(x), y)
      optimizer.zero_grad(set_to_none=True)
      loss.backward()
      torch.nn.utils.clip_grad_norm_(model.parameters(), 2.0)
      optimizer.step()
      return loss
  else:
    def call():
      with torch.inference_mode(), autocast():
        return forward(x)

  def sync(_):
    if device == 'cuda':
      torch.cuda.synchronize()

  def peak_memory() -> Optional[int]:
    return int(torch.cuda.max_memory_allocated()) if device == 'cuda' else None

  return call, sync, peak_memory


def interleaved(impls: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]], args,
                ) -> dict[str, list[float]]:
  """Images/s of each implementation over `args.runs` runs, the implementations taking turns.

  Each turn starts with `args.turn_warmup` untimed calls: on CPU the first step of one library
  after the other's ran much slower than the next, for a cause not found (BENCHMARKS.md has the
  figures and what was ruled out), a cost no user running one library pays.
  """
  for call, sync in impls.values():
    for _ in range(args.warmup):
      sync(call())
  rates = {name: [] for name in impls}
  names = list(impls)
  for run in range(args.runs):
    for name in (names if run % 2 == 0 else names[::-1]):
      call, sync = impls[name]
      for _ in range(args.turn_warmup):
        sync(call())
      start = time.perf_counter()
      out = None
      for _ in range(args.iters):
        out = call()
      sync(out)
      rates[name].append(args.iters * args.batch / (time.perf_counter() - start))
  return rates


def peak_tflops(args) -> Optional[float]:
  if args.peak_tflops:
    return args.peak_tflops
  if args.dtype != 'bfloat16':
    return None
  kind = jax.devices()[0].device_kind
  tpu = next((c.peak_bf16_tflops for c in aot.CHIPS.values() if c.device_kind == kind), None)
  return tpu or next((v for k, v in GPU_PEAK_BF16_TFLOPS.items() if k.lower() in kind.lower()),
                     None)


def xla_flops(compiled) -> Optional[float]:
  return aot.costs(compiled)['flops']


def ours_peak_memory(compiled) -> Optional[int]:
  """The device allocator's peak where it reports one (GPU, TPU); else XLA's own account of the
  program's memory (`inception_jax.aot.memory`)."""
  stats = jax.devices()[0].memory_stats()
  if stats and 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use'])
  memory = aot.memory(compiled)
  return memory and memory['total_bytes']


def measure(args, train: bool) -> dict[str, Any]:
  """Everything for one configuration, as the JSON record."""
  model, call, compile_s, compiled, recorded = ours(args, train)
  impls = {'ours': (call, jax_sync)}
  if args.compare_diagnostics and train:
    impls['ours without diagnostics'] = (ours(args, train, diagnostics=False)[1], jax_sync)
  if args.trainable_scopes and train:
    _, probe_call, probe_compile_s, _, _ = ours(args, train, trainable_scopes=args.trainable_scopes)
    impls['ours, frozen'] = (probe_call, jax_sync)
  timm_memory = None
  if args.compare_timm:
    timm_call, timm_sync, timm_memory = timm_step(args, train)
    impls['timm'] = (timm_call, timm_sync)
  rates = interleaved(impls, args)

  macs = count_macs(model, jax.eval_shape(lambda: steps.init_variables(
      model, (args.image_size, args.image_size, 3), 0)), args.image_size)
  # Model FLOPs: 2 per multiply-accumulate forward, and twice that again backward.
  model_flops = 2 * macs * (3 if train else 1)
  flops = xla_flops(compiled)
  img_per_s = statistics.median(rates['ours'])
  result = {
      'model': args.model, 'step': 'train' if train else 'inference', 'batch': args.batch,
      'image_size': args.image_size, 'dtype': args.dtype,
      'layout': 'unrolled' if args.unrolled else 'scan', 'bn_folded': args.bn_folded,
      'device': jax.devices()[0].device_kind, 'device_count': 1,
      'xla_flags': os.environ.get('XLA_FLAGS', ''), 'jax': jax.__version__,
      'compile_s': round(compile_s, 2), 'img_per_s': round(img_per_s, 2),
      'runs_img_per_s': [round(r, 2) for r in rates['ours']],
      'model_flops_per_image': model_flops,
      'xla_flops_per_image': flops / args.batch if flops else None,
      'peak_memory_bytes': ours_peak_memory(compiled), 'diagnostics': list(recorded),
  }
  if 'ours without diagnostics' in rates:
    bare = rates['ours without diagnostics']
    result.update(no_diagnostics_img_per_s=round(statistics.median(bare), 2),
                  no_diagnostics_runs_img_per_s=[round(r, 2) for r in bare],
                  diagnostics_cost=round(statistics.median(bare) / img_per_s - 1, 4))
  if 'ours, frozen' in rates:
    part = rates['ours, frozen']
    # Each run times both steps in turn: the median of its ratios, beside the ratio of medians.
    result.update(trainable_scopes=args.trainable_scopes,
                  frozen_compile_s=round(probe_compile_s, 2),
                  frozen_img_per_s=round(statistics.median(part), 2),
                  frozen_runs_img_per_s=[round(r, 2) for r in part],
                  frozen_speedup=round(statistics.median(part) / img_per_s, 3),
                  frozen_speedup_per_run=round(statistics.median(
                      p / f for p, f in zip(part, rates['ours'])), 3))
  peak = peak_tflops(args)
  result['peak_tflops'] = peak
  result['mfu'] = round(model_flops * img_per_s / (peak * 1e12), 4) if peak else None
  if args.compare_timm:
    timm_rate = statistics.median(rates['timm'])
    result.update(timm_img_per_s=round(timm_rate, 2),
                  timm_runs_img_per_s=[round(r, 2) for r in rates['timm']],
                  ratio=round(img_per_s / timm_rate, 3), timm_peak_memory_bytes=timm_memory(),
                  timm_compiled=args.timm_compile)
  return result


def report(results: list[dict[str, Any]], as_json: bool) -> None:
  for r in results:
    memory = f'{r["peak_memory_bytes"] / 2**30:.2f} GiB' if r['peak_memory_bytes'] else 'n/a'
    size = f'{r["image_size"]}x{r["image_size"]}'
    print(f'{r["model"]} {r["step"]} step, batch {r["batch"]}, {size}, '
          f'{r["dtype"]}, {r["layout"]}, on {r["device"]}')
    print(f'  compile {r["compile_s"]:.1f} s; {r["img_per_s"]:.1f} img/s (runs '
          f'{", ".join(f"{x:.1f}" for x in r["runs_img_per_s"])}); peak memory {memory}')
    xla = r['xla_flops_per_image']
    print(f'  model {r["model_flops_per_image"] / 1e9:.1f} GFLOP/image'
          + (f' (XLA counts {xla / 1e9:.1f})' if xla else '')
          + (f'; MFU {100 * r["mfu"]:.1f}% of {r["peak_tflops"]:.0f} TFLOP/s' if r['mfu'] else ''))
    if 'diagnostics_cost' in r:
      print(f'  without diagnostics: {r["no_diagnostics_img_per_s"]:.1f} img/s (runs '
            f'{", ".join(f"{x:.1f}" for x in r["no_diagnostics_runs_img_per_s"])}); the '
            f'diagnostics cost {100 * r["diagnostics_cost"]:+.1f}% of the step time')
    if 'frozen_speedup' in r:
      print(f'  trainable_scopes={r["trainable_scopes"]}: compile {r["frozen_compile_s"]:.1f} s; '
            f'{r["frozen_img_per_s"]:.1f} img/s (runs '
            f'{", ".join(f"{x:.1f}" for x in r["frozen_runs_img_per_s"])}); '
            f'{r["frozen_speedup"]:.2f}x the full step (median of the runs\' ratios '
            f'{r["frozen_speedup_per_run"]:.2f}x)')
    if 'ratio' in r:
      print(f'  timm{" (torch.compile)" if r["timm_compiled"] else ""}: {r["timm_img_per_s"]:.1f} '
            f'img/s (runs {", ".join(f"{x:.1f}" for x in r["timm_runs_img_per_s"])}); '
            f'ours/timm = {r["ratio"]:.2f}')
  if as_json:
    for r in results:
      print(json.dumps(r))


def main(doc: str, train: bool) -> None:
  """A benchmark script's whole run: its arguments, one measurement, the report."""
  args = arguments(doc.splitlines()[0])
  report([measure(args, train=train)], args.json)
