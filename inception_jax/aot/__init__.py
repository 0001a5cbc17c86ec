"""Compiles the training job ahead of time for a Cloud TPU slice that is not there (or this
machine's CPUs) and reports whether it fits in a chip's memory and how fast it should run.

    python -m inception_jax.aot --config=configs/irv2.py --topology=v5p-128 \
        [--config.batch_size=4096] [--find_max_batch] [--json]
    python -m inception_jax.aot --config=configs/demo.py --topology=cpu:8

The job's own train and eval steps (`job.Job`: the same functions, mesh, shardings, donation and
config that `python -m inception_jax.main` builds on that slice) are lowered from abstract shapes
and compiled for the slice's devices: compile-only TPU devices from libtpu
(`pip install -e ".[tpu]"`), no parameter is materialised and no data is read (ImageNet and
CIFAR-10 have their published sizes). The report, per chip:

- memory: arguments, outputs, temporaries and code of the train step, their total less what the
  donated state shares with the outputs, and the peak during an evaluation (the train state, an
  eval batch and the eval step's own buffers), against the chip's HBM: "fits" or "does not fit by
  X GiB". XLA:TPU refuses to compile a program larger than HBM; its message is reported.
- an estimate, not a measurement: a roofline from the compiled step's FLOPs and bytes accessed
  (XLA's cost analysis) against the chip's peak bf16 FLOP/s and HBM bandwidth, the images/s per
  chip and per slice it implies and how long the config's epochs would take. It leaves out the
  gradient all-reduce over the interconnect and the input pipeline, and reaches no real chip's
  speed: use it to compare slices and batches, and measure. With scanned blocks it is too low (XLA
  counts a loop's body once): it says so. XLA's own cost-model time (`optimal_seconds`) is shown
  only where it is plausible (positive, not below the FLOP bound).

`--find_max_batch` searches the largest per-chip batch whose train step fits, to `--batch_step`
images per chip (`find_max_batch`). Exit status: 0 fits, 1 does not fit or does not
compile, 2 a setting to fix.
"""

# One module per job (each imports JAX only when called, never on import: `python -m
# inception_jax.aot` imports this package, then sets the environment JAX starts in):
#   chips.py        TPU chips and slices as data (CHIPS, SLICES)
#   environment.py  libtpu's settings, the environment before JAX starts, the devices (target)
#   analysis.py     XLA's account of a compiled program: memory, costs, out-of-memory refusals
#   compile.py      the job's steps compiled for a target: the report (compile_job)
#   roofline.py     the estimate of a step's speed (estimate)
#   search.py       the largest per-chip batch that fits (find_max_batch)
#   report.py       the report as text (report_text)
#   __main__.py     the command: its flags and main

from inception_jax.aot.analysis import OUT_OF_MEMORY, costs, memory, nbytes
from inception_jax.aot.chips import CHIPS, CPU_PREFIX, GIB, SLICES, Chip, Slice, known_topologies
from inception_jax.aot.compile import compile_job, data_source
from inception_jax.aot.environment import Target, libtpu_missing, prepare_environment, target
from inception_jax.aot.report import report_text
from inception_jax.aot.roofline import estimate
from inception_jax.aot.search import find_max_batch

__all__ = ['CHIPS', 'CPU_PREFIX', 'Chip', 'GIB', 'OUT_OF_MEMORY', 'SLICES', 'Slice', 'Target',
           'compile_job', 'costs', 'data_source', 'estimate', 'find_max_batch',
           'known_topologies', 'libtpu_missing', 'memory', 'nbytes', 'prepare_environment',
           'report_text', 'target']
