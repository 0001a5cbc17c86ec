"""A rehearsal of training on a Cloud TPU pod, on this machine: `launch/tpu_pod.sh` as a user runs
it, against a stand-in gcloud (tests/fake_gcloud.py) whose slice's workers are local processes
joined by `jax.distributed` on 127.0.0.1, each with fake CPU devices and a disk of its own, and a
bucket on a GCS API server (fake-gcs-server, tests/gcs.py). The data are ILSVRC2012 archives in
miniature (tests/test_prepare.py) put through `python -m inception_jax.prepare`; the model is the
ImageNet config made tiny (`OVERRIDES`). While the job trains, the slice meets faults (`FAULTS`): a
preemption (SIGTERM to every worker, then the node is PREEMPTED and comes back with new, empty
disks), a lost host (SIGKILL to one worker), a lost slice (SIGKILL to every worker, no warning) and
a frozen host (SIGSTOP to one worker). Each time the launcher brings the job back and it resumes
from the bucket; at the end its parameters must equal those of an uninterrupted run of the same
processes and devices (`launch/local_processes.sh`) bit for bit.

    python tests/rehearsal.py                        # 2 workers x 2 devices, 5 to 15 minutes
    python tests/rehearsal.py --workers=4 --devices=2 --faults=preempt,lost_slice --keep

prints what happened and the checks' verdicts; tests/test_rehearsal.py runs it and asserts them.
It lives under tests/ since it is made of the tests' stand-ins (gcloud, the bucket, the archives).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Callable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]  # the tests' helpers, and the configs they import

from inception_jax import workdir as wd  # noqa: E402

import fake_gcloud  # noqa: E402
from train_utils import ROOT, assert_trees_equal, environment, final_variables  # noqa: E402

CONFIG = 'configs/imagenet.py:irv2'
STEPS = 24
# The ImageNet recipe as small as configs/demo.py:tiny: compiles in seconds on a CPU.
OVERRIDES = ['--config.model.depth_multiplier=0.125', '--config.model.repeats=(1,1,1)',
             '--config.model.small_inputs=True', '--config.model.scan_blocks=True',
             '--config.dataset.image_size=32', '--config.batch_size=8',
             '--config.eval_batch_size=8', f'--config.num_train_steps={STEPS}',
             '--config.log_every_steps=2', '--config.checkpoint_every_steps=2',
             '--config.eval_every_steps=12']
PEER_TIMEOUT_S = 5  # how soon the others stop when a worker is lost or frozen
# The faults, in the order they strike, each once the bucket holds a checkpoint of a later step.
FAULTS = {
    'preempt': lambda state: fake_gcloud.preempt(state),
    'lost_host': lambda state: fake_gcloud.lose_host(state, 1),
    'lost_slice': lambda state: fake_gcloud.lose_slice(state),
    'frozen_host': lambda state: fake_gcloud.freeze(state, 1),
}
DEFAULT_FAULTS = ('preempt', 'lost_host', 'lost_slice', 'frozen_host')
# Where the bucket is: 'gcs', on fake-gcs-server; or 'local', a shared directory standing in for
# it (the workers' gs://BUCKET paths rewritten to it), to rehearse the rest where gs:// fails.
STORAGE = 'gcs'


@dataclasses.dataclass
class Rehearsal:
  root: str  # everything of this rehearsal but the bucket's objects
  bucket: str  # gs://NAME
  storage: str  # 'gcs' (the emulator) or 'local' (a shared directory stands in for the bucket)
  workers: int
  devices: int
  reference: str = ''  # the uninterrupted run's workdir
  launcher_status: Optional[int] = None
  launcher_output: str = ''
  faults: list = dataclasses.field(default_factory=list)  # (fault, latest step then, seconds in)
  seconds: float = 0.0

  @property
  def bucket_dir(self) -> str:
    return os.path.join(self.root, 'bucket')

  def url(self, path: str) -> str:
    """gs://BUCKET/path."""
    return f'{self.bucket}/{path}'

  def storage_path(self, path: str) -> str:
    """Where gs://BUCKET/path is for this process: the URL, or the directory standing in."""
    return self.url(path) if self.storage == 'gcs' else os.path.join(self.bucket_dir, path)

  @property
  def workdir(self) -> str:
    return self.storage_path('run')

  @property
  def state_file(self) -> str:
    return os.path.join(self.root, 'slice', 'state.json')

  def disks(self) -> list[str]:
    disks = os.path.join(self.root, 'slice', 'disks')
    return sorted(os.path.join(disks, d) for d in os.listdir(disks))

  @property
  def cwd(self) -> str:
    return os.path.join(self.root, 'cwd')


def job_environment(devices: int) -> dict:
  """The jobs' environment: CPU devices, and a compilation cache shared by every start (a worker's
  default is on its own disk, new after each preemption: each start would compile again)."""
  env = environment(devices)
  env.setdefault('JAX_COMPILATION_CACHE_DIR',
                 os.path.join(tempfile.gettempdir(), 'inception_jax_test_xla_cache'))
  env.setdefault('JAX_DISABLE_MOST_OPTIMIZATIONS', '1')  # as the tests run: faster compiles
  return env


def prepare_data(rehearsal: Rehearsal) -> str:
  """The miniature ILSVRC2012 archives, prepared into gs://BUCKET/tfds; returns that URL."""
  from test_prepare import write_ilsvrc
  manual_dir = write_ilsvrc(os.path.join(rehearsal.root, 'ilsvrc'))
  subprocess.run([sys.executable, '-m', 'inception_jax.prepare', 'imagenet2012',
                  f'--data_dir={rehearsal.storage_path("tfds")}', f'--manual_dir={manual_dir}'],
                 cwd=ROOT, env=job_environment(1), check=True, capture_output=True, text=True,
                 timeout=600)
  return rehearsal.url('tfds')


def run_reference(rehearsal: Rehearsal, overrides: list[str]) -> None:
  """The same job on the same processes and devices, uninterrupted, into a local workdir. Run
  again where it stopped on a fault (status 75): on a busy machine XLA:CPU's gloo collectives give
  up on a peer that is 30 s late (still compiling) at the first collective."""
  rehearsal.reference = os.path.join(rehearsal.root, 'reference')
  local = [o.replace(rehearsal.bucket, rehearsal.storage_path('').rstrip('/')) for o in overrides]
  for _ in range(5):
    done = subprocess.run([os.path.join(ROOT, 'launch/local_processes.sh'),
                           str(rehearsal.workers), CONFIG, rehearsal.reference, *local,
                           f'--peer_timeout={PEER_TIMEOUT_S}'],
                          cwd=ROOT, env=job_environment(rehearsal.devices), capture_output=True,
                          text=True, timeout=900)
    if done.returncode != 75:
      break
  if done.returncode:
    raise RuntimeError(f'the reference run failed:\n{done.stdout[-3000:]}{done.stderr[-3000:]}')


def wait_for(condition: Callable[[], bool], launcher: subprocess.Popen, timeout_s: float) -> None:
  deadline = time.monotonic() + timeout_s
  while not condition():
    if launcher.poll() is not None:
      raise RuntimeError(f'launch/tpu_pod.sh ended (status {launcher.returncode}) too early')
    if time.monotonic() > deadline:
      raise TimeoutError(f'nothing happened in {timeout_s:.0f} s')
    time.sleep(0.5)


def latest_step(rehearsal: Rehearsal) -> int:
  try:
    return wd.latest_step(rehearsal.workdir) or 0
  except Exception:  # pylint: disable=broad-except  (a listing that raced a save)
    return 0


def rehearse(root: str, bucket: str, storage: str = 'gcs', workers: int = 2, devices: int = 2,
             faults=DEFAULT_FAULTS, say: Callable[[str], None] = lambda line: None,
             timeout_s: float = 900) -> Rehearsal:
  """Runs the rehearsal in `root` (a new directory) against `bucket` (gs://NAME: on the emulator
  that `gcs.Emulator` started in this process, or with `storage='local'` a name for a directory
  under `root`); returns what happened, for the checks."""
  began = time.monotonic()
  rehearsal = Rehearsal(root, bucket.rstrip('/'), storage, workers, devices)
  os.makedirs(rehearsal.cwd)
  os.makedirs(rehearsal.bucket_dir)
  say(f'preparing the miniature ILSVRC2012 archives into {rehearsal.url("tfds")}')
  data = prepare_data(rehearsal)
  overrides = [*OVERRIDES, f'--config.dataset.data_dir={data}']
  say(f'the uninterrupted reference: {workers} processes x {devices} devices '
      '(launch/local_processes.sh)')
  run_reference(rehearsal, overrides)
  env = dict(job_environment(devices), POLL_SECONDS='1', MAX_RESTARTS=str(len(faults) + 5),
             **fake_gcloud.slice_environment(os.path.join(root, 'slice'), workers,
                                             rehearsal.state_file,
                                             os.path.join(root, 'slice', 'calls.jsonl')))
  if storage == 'local':
    env.update(FAKE_BUCKET=rehearsal.bucket, FAKE_BUCKET_DIR=rehearsal.bucket_dir)
  command = [os.path.join(ROOT, 'launch/tpu_pod.sh'), '--skip_check', '--spot', '--delete',
             'rehearsal', 'zone-a', f'v4-{8 * workers}', CONFIG, rehearsal.url('run'),
             *overrides, f'--peer_timeout={PEER_TIMEOUT_S}']
  say(f'launch/tpu_pod.sh on a stand-in v4-{8 * workers} slice ({workers} workers), workdir '
      f'{rehearsal.url("run")}')
  log_path = os.path.join(root, 'tpu_pod.log')
  with open(log_path, 'w') as log:
    launcher = subprocess.Popen(command, cwd=rehearsal.cwd, env=env, stdout=log,
                                stderr=subprocess.STDOUT)
  try:
    for i, fault in enumerate(faults):
      at = 2 * (i + 1) * STEPS // (2 * (len(faults) + 1))  # evenly over the run
      wait_for(lambda at=at: latest_step(rehearsal) >= at, launcher, timeout_s)
      step = latest_step(rehearsal)
      say(f'{fault}: the bucket holds step {step}')
      FAULTS[fault](rehearsal.state_file)
      rehearsal.faults.append((fault, step, time.monotonic() - began))
    rehearsal.launcher_status = launcher.wait(timeout=timeout_s)
  finally:
    if launcher.poll() is None:
      launcher.kill()
      launcher.wait()
    if os.path.exists(rehearsal.state_file):
      fake_gcloud.kill_everything(rehearsal.state_file)
    with open(log_path) as f:
      rehearsal.launcher_output = f.read()
  rehearsal.seconds = time.monotonic() - began
  restarts = rehearsal.launcher_output.count('starting the job again')
  say(f'launch/tpu_pod.sh ended with status {rehearsal.launcher_status} after {restarts} '
      f'restart(s); {rehearsal.seconds:.0f} s in all')
  return rehearsal


# The checks: each raises AssertionError with what is wrong.

def metrics(workdir: str) -> list[dict]:
  return [json.loads(line) for line in wd.read_text(wd.join(workdir, wd.METRICS)).splitlines()]


def check_launcher(r: Rehearsal) -> None:
  assert r.launcher_status == 0, r.launcher_output[-5000:]
  assert 'the job finished' in r.launcher_output, r.launcher_output[-5000:]


def check_bit_exact(r: Rehearsal) -> None:
  """The final parameters and batch statistics equal the uninterrupted run's bit for bit."""
  assert_trees_equal(final_variables(r.workdir), final_variables(r.reference))


def check_metrics_once(r: Rehearsal) -> None:
  """Each row once, and as the reference's but for the speed and the diagnostics of a log row
  after a resume between two log steps (their sums are not checkpointed: they cover the steps
  since the resume)."""
  rows, reference = metrics(r.workdir), metrics(r.reference)
  timeless = lambda rows: [{k: v for k, v in row.items() if k != 'images_per_sec' and
                            not k.startswith(('dead_', 'residual_ratio_'))} for row in rows]
  differences = [(a, b) for a, b in zip(timeless(rows), timeless(reference)) if a != b]
  assert timeless(rows) == timeless(reference), (
      f'{len(rows)} rows, the reference has {len(reference)}; steps {[r["step"] for r in rows]}; '
      f'the first difference (rehearsal, reference): {differences[:1]}')
  steps = [row['step'] for row in rows if 'loss' in row]
  assert steps == list(range(2, STEPS + 1, 2)), steps


def tensorboard_steps(workdir: str) -> dict[str, list[int]]:
  """{tag: [steps]} as TensorBoard's current loader reads the workdir: one logical run. A gs://
  workdir's event files are read from a local copy (TensorBoard reads gs:// through TensorFlow's
  GCS client, which cannot be pointed at an emulator)."""
  from tensorboard.backend.event_processing import plugin_event_accumulator
  if wd.is_remote(workdir):
    local = tempfile.mkdtemp(prefix='events_')
    for path in wd.glob(workdir, wd.EVENTS):
      with open(os.path.join(local, os.path.basename(path)), 'wb') as f:
        f.write(wd.read_bytes(path))
    workdir = local
  accumulator = plugin_event_accumulator.EventAccumulator(workdir)
  accumulator.Reload()
  return {tag: [e.step for e in accumulator.Tensors(tag)]
          for tag in accumulator.Tags()['tensors']}


def check_tensorboard_once(r: Rehearsal) -> None:
  steps, reference = tensorboard_steps(r.workdir), tensorboard_steps(r.reference)
  assert steps == reference and steps['loss'] == list(range(2, STEPS + 1, 2)), steps


def check_nothing_outside_the_bucket(r: Rehearsal) -> None:
  """No checkpoint, metrics or events on the workers' disks or in the launcher's working
  directory, and no `gs:` directory anywhere (a gs:// path taken for a local one)."""
  found = []
  for top in [*r.disks(), r.cwd]:
    for directory, dirs, files in os.walk(top):
      found += [os.path.join(directory, name) for name in dirs + files
                if name in ('gs:', wd.CHECKPOINTS, wd.METRICS, wd.MODEL_INFO, wd.LEASE) or
                name.startswith('events.out.tfevents')]
  assert not found, found


def check_evaluate_and_plot(r: Rehearsal) -> None:
  env = job_environment(1)
  done = subprocess.run([sys.executable, '-m', 'inception_jax.evaluate',
                         f'--checkpoint={r.workdir}', '--crops=1',
                         f'--data_dir={r.storage_path("tfds")}', '--json'],
                        cwd=r.cwd, env=env, capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  output = os.path.join(r.root, 'curves.png')
  done = subprocess.run([sys.executable, '-m', 'inception_jax.plot', r.workdir,
                         f'--output={output}'], cwd=r.cwd, env=env, capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  with open(output, 'rb') as f:
    assert f.read(4) == b'\x89PNG'


CHECKS = {'launcher': check_launcher, 'bit_exact': check_bit_exact,
          'metrics_once': check_metrics_once, 'tensorboard_once': check_tensorboard_once,
          'nothing_outside_the_bucket': check_nothing_outside_the_bucket,
          'evaluate_and_plot': check_evaluate_and_plot}


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--workers', type=int, default=2)
  parser.add_argument('--devices', type=int, default=2, help='fake CPU devices per worker')
  parser.add_argument('--faults', default=','.join(DEFAULT_FAULTS),
                      help=f'in order, of {", ".join(FAULTS)}')
  parser.add_argument('--storage', choices=['gcs', 'local'], default=STORAGE,
                      help='gcs: a bucket on fake-gcs-server; local: a shared directory')
  parser.add_argument('--keep', action='store_true', help='keep the rehearsal\'s files')
  args = parser.parse_args()
  root = tempfile.mkdtemp(prefix='rehearsal_')
  say = lambda line: print(f'[rehearsal {time.strftime("%H:%M:%S")}] {line}', flush=True)
  emulator = None
  try:
    if args.storage == 'gcs':
      from gcs import Emulator
      emulator = Emulator()
      bucket = emulator.bucket('rehearsal')
      say(f'fake-gcs-server at {emulator.url}, bucket {bucket}')
    else:
      bucket = 'gs://rehearsal'
    r = rehearse(root, bucket, args.storage, args.workers, args.devices,
                 [f for f in args.faults.split(',') if f], say)
    failed = 0
    for name, check in CHECKS.items():
      try:
        check(r)
        say(f'ok      {name}')
      except Exception as e:  # pylint: disable=broad-except
        failed += 1
        say(f'FAILED  {name}: {str(e)[-1500:]}')
    say(f'{len(CHECKS) - failed} of {len(CHECKS)} checks passed' +
        (f'; the files are in {root} (the launcher\'s output: tpu_pod.log)' if args.keep else ''))
    return 1 if failed else 0
  finally:
    if emulator:
      emulator.stop()
    if not args.keep:
      shutil.rmtree(root, ignore_errors=True)


if __name__ == '__main__':
  sys.exit(main())
