"""Evaluates checkpoints as the paper does: single-crop, multi-crop and ensembles (Tables 2-5).

    python -m inception_jax.evaluate --checkpoint=/path/to/irv2 --crops=1,12,144 \\
        --data_dir=/path/to/tensorflow_datasets
    python -m inception_jax.evaluate --checkpoint=v4,irv2_a,irv2_b,irv2_c --crops=144   # ensemble

`--checkpoint` takes converted checkpoints (`inception_jax.convert`) and training workdirs (their
averaged parameters; `--params=raw` for the raw ones), each with its own network, options, image
size and classes from its `model.json`; a workdir's also gives the defaults of `--dataset`,
`--data_dir` and `--split`: the data its run trained and evaluated on. Several checkpoints form an
ensemble: the softmax probabilities are averaged over the crops of each model, then over the models
(GoogLeNet's rule); architectures and image sizes may be mixed. A 1001-class TF-slim head
evaluated on 1000 classes has its background class dropped (and the rest renormalised); other
disagreements are an error.

The protocols (`--crops`, several at once: each image is read once for all of them):
- `1`: the training job's evaluation crop: the central 87.5% of the image, bilinear resize to the
  model's size (TF-slim's eval preprocessing); for the in-memory sources (digits, synthetic), the
  image as the job evaluates it. On the same checkpoint and data it gives the job's `eval_top1` and
  `eval_top5` exactly.
- `10`, `12`, `144`: the multi-crop protocols of `inception_jax.data.crops` (AlexNet's 10 crops;
  our reading of the paper's "12 crops as described in [GoogLeNet]"; GoogLeNet's 144 crops, with
  its scales multiplied by image_size / 224). Their definitions and sources are in that module.

Every image of the split is evaluated exactly once (the last batch is padded and masked), sharded
over all devices of all hosts; an unreadable file is skipped, counted and reported. The result is a
table in the paper's form (models, crops, top-1 and top-5 error, images), a JSON record per row with
`--json`, and the same records in `evaluation.json` beside the first checkpoint (or `--output`).
`--dump_crops=DIR` writes the crops of the first image as PNG files, to look at a protocol.
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import json
import os
import sys
import time
from typing import Any, Optional, Sequence

from absl import flags
import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec as P
import ml_collections

from inception_jax import cli, errors, startup, workdir as wd
from inception_jax.errors import ConfigError
from inception_jax.network import load_network
from inception_jax.steps import hits, normalize

PROTOCOLS = (1, 10, 12, 144)
PROGRESS_SECONDS = 10.0



def define_flags(flag_values: flags.FlagValues) -> None:
  """The command's flags (the convention of `inception_jax.cli`)."""
  define = dict(flag_values=flag_values)
  flags.DEFINE_list('checkpoint', None, 'Checkpoint directories (converted, or training '
                    'workdirs); several form an ensemble.', **define)
  flags.DEFINE_list('crops', ['1'], f'Protocols to evaluate, of {", ".join(map(str, PROTOCOLS))}.',
                    **define)
  flags.DEFINE_string('dataset', None, 'imagenet2012, cifar10, folder:PATH, digits or synthetic '
                      '(default: what the first checkpoint was trained on, else imagenet2012).',
                      **define)
  flags.DEFINE_string('data_dir', None, 'TFDS data directory (imagenet2012, cifar10; default: '
                      'the one the first checkpoint was trained from, else TFDS\'s).', **define)
  flags.DEFINE_string('split', None, 'Split to evaluate (default: the training run\'s eval split, '
                      'else the dataset\'s validation or test split; a folder\'s sub-directory).',
                      **define)
  flags.DEFINE_integer('batch_size', None, 'Images per global batch (default: about 128 crops per '
                       'forward pass), a multiple of the devices.', **define)
  flags.DEFINE_enum('params', 'ema', ['ema', 'raw'], 'A training workdir\'s averaged (ema) or raw '
                    'parameters.', **define)
  flags.DEFINE_bool('json', False, 'Print one JSON record per row after the table.', **define)
  flags.DEFINE_string('output', None, 'Where to write the records (default: '
                      'FIRST_CHECKPOINT/evaluation.json).', **define)
  flags.DEFINE_string('dump_crops', None, 'Directory for PNG files of the first image\'s crops.',
                      **define)
  flags.mark_flags_as_required(['checkpoint'], flag_values)


def parse_protocols(values: Sequence[str]) -> tuple[int, ...]:
  """`--crops` values as protocols; an error naming the valid ones otherwise."""
  try:
    protocols = tuple(dict.fromkeys(int(v) for v in values))
  except ValueError:
    protocols = ()
  if not protocols or any(p not in PROTOCOLS for p in protocols):
    raise ConfigError(f'--crops={",".join(values)}: the protocols are '
                      f'{", ".join(map(str, PROTOCOLS))} (several: --crops=1,12,144).')
  return protocols


@dataclasses.dataclass
class Member:
  """One network of the evaluation: a checkpoint's record, variables and jitted probabilities."""
  path: str
  record: Any
  model: Any
  variables: Any
  drop_background: bool = False

  @property
  def name(self) -> str:
    return f'{self.record.model} ({os.path.basename(os.path.normpath(self.path))})'

  @property
  def size(self) -> int:
    return int(self.record.image_size or self.model.default_size)


def load_member(path: str, params: str) -> Member:
  """The network at `path` as the training job evaluated it (its recorded options)."""
  model, variables, record = load_network(path, params)
  return Member(path, record, model, variables)


def check_classes(members: list[Member], source) -> None:
  """Each member's classes against the dataset's: equal, or a 1001-way TF-slim head on ImageNet's
  1000 classes (its background class is dropped); an error naming both otherwise."""
  for member in members:
    classes, count = member.record.classes, member.model.num_classes
    if classes == 'imagenet+background' and source.classes == 'imagenet':
      member.drop_background = True
    elif count != source.num_classes or (classes is not None and source.classes is not None
                                         and classes != source.classes):
      raise ConfigError(
          f'{member.path} classifies {count} classes ({_describe(classes)}), but {source.name} '
          f'has {source.num_classes} ({_describe(source.classes)}): evaluate it on the data it '
          'was trained or converted for (--dataset).')


def _describe(classes) -> str:
  if classes is None or isinstance(classes, str):
    return str(classes or 'names unknown')
  return ', '.join(map(str, classes[:4])) + (', ...' if len(classes) > 4 else '')


def default_dataset(member: Member) -> str:
  source = member.record.source or ''
  return source[len('trained on '):] if source.startswith('trained on ') else 'imagenet2012'


def data_settings(member: Member, dataset: Optional[str] = None, data_dir: Optional[str] = None,
                  split: Optional[str] = None) -> tuple[str, Optional[str], Optional[str]]:
  """The dataset, data_dir and split to evaluate `member` on: each flag's value, else what its
  training run used (on the dataset it was trained on), else imagenet2012 in TFDS's default
  data_dir, its validation split."""
  dataset = dataset or default_dataset(member)
  recorded = member.record.data or {}
  if dataset == recorded.get('name'):
    data_dir, split = data_dir or recorded.get('data_dir'), split or recorded.get('eval_split')
  return dataset, data_dir, split


def make_source(name: str, data_dir: Optional[str], split: Optional[str], image_size: int,
                batch_size: int):
  """The eval split of dataset `name` in batches of `batch_size` images, as the job reads it."""
  # deferred: data/ loads TensorFlow (tf.data), only when images are read
  from inception_jax.data import create_source, preprocessing
  config = ml_collections.ConfigDict({
      'name': name, 'data_dir': data_dir, 'eval_split': split, 'image_size': image_size,
      'background_class': False, 'color_distortion': False,
      'min_crop_area': preprocessing.AREA_RANGE[0]})
  # The training batch is never drawn; the smallest valid one keeps small folders acceptable.
  return create_source(config, batch_size=jax.process_count(), eval_batch_size=batch_size, seed=0,
                       process_index=jax.process_index(), process_count=jax.process_count())


def crop_batches(source, protocols, sizes, batch_size: int):
  """`data.crops.crop_batches`, looked up here (benchmarks/evaluate.py times it)."""
  # deferred: data/ loads TensorFlow (tf.data), only when images are read
  from inception_jax.data import crops
  return crops.crop_batches(source, protocols, sizes, batch_size)


def probabilities_fn(member: Member, mesh_sharding):
  """Jitted: uint8 crops [images * crops, size, size, 3] -> mean probabilities [images, classes]
  over each image's crops."""

  @functools.partial(jax.jit, static_argnums=2, out_shardings=mesh_sharding)
  def probabilities(variables, images, crops_per_image):
    outputs = member.model.apply(variables, normalize(images, member.model.dtype), train=False)
    logits = (outputs[0] if isinstance(outputs, tuple) else outputs).astype(jnp.float32)
    if member.drop_background:
      logits = logits[:, 1:]  # softmax over the 1000 classes: class 0 dropped, the rest rescaled
    p = jax.nn.softmax(logits, axis=-1)
    return p.reshape(-1, crops_per_image, p.shape[-1]).mean(axis=1)

  return probabilities


def correct(probabilities, labels, mask):
  """Masked counts of top-1 and top-5 hits (as the training job's eval counts them), and of the
  images."""
  return (*hits(probabilities, labels, mask), jnp.sum(mask))


def ensemble(probabilities: Sequence[Any]) -> Any:
  """GoogLeNet's rule: the average of the members' probabilities (not of their logits)."""
  return sum(probabilities) / len(probabilities)


@dataclasses.dataclass
class Tally:
  top1: float = 0.0
  top5: float = 0.0
  images: float = 0.0

  def add(self, hits) -> None:
    self.top1 += float(hits[0])
    self.top5 += float(hits[1])
    self.images += float(hits[2])


def evaluate(paths: Sequence[str], protocols: Sequence[int], dataset: Optional[str] = None,
             data_dir: Optional[str] = None, split: Optional[str] = None,
             batch_size: Optional[int] = None, params: str = 'ema',
             progress: bool = True) -> list[dict[str, Any]]:
  """Evaluates `paths` (one checkpoint or an ensemble) with each of `protocols`; one record per
  (model or ensemble, protocol): top-1/top-5 accuracy and error (%), images."""
  # deferred: data/ loads TensorFlow (tf.data), only when images are read
  from inception_jax.data.crops import crop_key
  members = [load_member(path, params) for path in paths]
  dataset, data_dir, split = data_settings(members[0], dataset, data_dir, split)
  devices = jax.device_count()
  most_crops = max(1 if p == 1 else p for p in protocols)
  batch_size = batch_size or max(devices, 128 // most_crops // devices * devices)
  if batch_size % devices:
    raise ConfigError(f'--batch_size={batch_size} must be a multiple of the {devices} devices.')
  source = make_source(dataset, data_dir, split, members[0].size, batch_size)
  check_classes(members, source)
  sizes = sorted({m.size for m in members})
  mesh = jax.make_mesh((devices,), ('data',), axis_types=(jax.sharding.AxisType.Auto,))
  sharded, replicated = NamedSharding(mesh, P('data')), NamedSharding(mesh, P())
  variables = [jax.device_put(m.variables, replicated) for m in members]
  forward = [probabilities_fn(m, sharded) for m in members]
  hits = jax.jit(correct, out_shardings=replicated)
  rows = [(i, p) for p in protocols for i in range(len(members) + (len(members) > 1))]
  tallies = {row: Tally() for row in rows}
  total, first = source.eval_size, tallies[rows[0]]
  started = shown = time.perf_counter()

  def global_array(local):
    return jax.make_array_from_process_local_data(sharded, local)

  for crops, labels, valid in crop_batches(source, protocols, sizes, batch_size):
    labels, valid = global_array(labels), global_array(valid)
    for protocol in protocols:
      per_member = []
      for m, (member, fn) in enumerate(zip(members, forward)):
        local = crops[crop_key(protocol, member.size)]
        images = global_array(local.reshape(-1, *local.shape[2:]))
        per_member.append(fn(variables[m], images, local.shape[1]))
        tallies[(m, protocol)].add(hits(per_member[-1], labels, valid))
      if len(members) > 1:
        tallies[(len(members), protocol)].add(hits(ensemble(per_member), labels, valid))
    if progress and jax.process_index() == 0 and time.perf_counter() - shown > PROGRESS_SECONDS:
      shown = time.perf_counter()
      rate = first.images / (shown - started)
      eta = datetime.timedelta(seconds=int((total - first.images) / max(rate, 1e-9)))
      print(f'evaluated {int(first.images):,}/{total:,} images  {rate:.1f} img/s  ETA {eta}',
            flush=True)
  # deferred: data/ loads TensorFlow (tf.data), only when images are read
  from inception_jax.data.encoded import report_skipped
  report_skipped(getattr(source, 'read_eval', None), 'evaluation')

  names = [m.name for m in members]
  records = []
  for (index, protocol), tally in tallies.items():
    models = names if index == len(members) else [names[index]]
    top1, top5 = tally.top1 / max(tally.images, 1), tally.top5 / max(tally.images, 1)
    records.append({
        'models': models, 'checkpoints': list(paths) if index == len(members) else [paths[index]],
        'crops': protocol, 'top1': top1, 'top5': top5,
        'top1_error': round(100 * (1 - top1), 3), 'top5_error': round(100 * (1 - top5), 3),
        'images': int(tally.images), 'dataset': dataset, 'split': split or 'default',
        'params': params})
  return records


def table(records: list[dict[str, Any]]) -> str:
  """The paper's form: models, crops, top-1 error, top-5 error, images."""
  labels = [' + '.join(r['models']) if len(r['models']) > 1 else r['models'][0]
            for r in records]
  width = max([len('models'), *map(len, labels)])
  lines = [f'{"models":<{width}}  crops  top-1 error  top-5 error  images']
  for label, r in zip(labels, records):
    lines.append(f'{label:<{width}}  {r["crops"]:>5}  {r["top1_error"]:>10.2f}%  '
                 f'{r["top5_error"]:>10.2f}%  {r["images"]:>6,}')
  return '\n'.join(lines)


def main(argv, FLAGS: flags.FlagValues) -> None:
  cli.flags_only(argv)
  startup.start()

  # deferred: data/ loads TensorFlow (tf.data), only when images are read
  from inception_jax.data import crops
  output = FLAGS.output or wd.join(FLAGS.checkpoint[0], wd.EVALUATION)
  with errors.reported():
    for path, flag in [*((c, '--checkpoint') for c in FLAGS.checkpoint), (output, '--output'),
                       (FLAGS.data_dir, '--data_dir'), (FLAGS.dump_crops, '--dump_crops')]:
      wd.check(path, flag)
    protocols = parse_protocols(FLAGS.crops)
    if FLAGS.dump_crops:
      member = load_member(FLAGS.checkpoint[0], FLAGS.params)
      settings = data_settings(member, FLAGS.dataset, FLAGS.data_dir, FLAGS.split)
      source = make_source(*settings, member.size, jax.device_count())
      crops.dump_crops(FLAGS.dump_crops, source, protocols, member.size)
      print(f'Wrote the crops of the first image to {FLAGS.dump_crops}.')
    records = evaluate(FLAGS.checkpoint, protocols, FLAGS.dataset, FLAGS.data_dir, FLAGS.split,
                       FLAGS.batch_size, FLAGS.params)
  if jax.process_index() != 0:
    return
  print(table(records))
  if FLAGS.json:
    for record in records:
      print(json.dumps(record))
  wd.write_atomically(output, json.dumps(records, indent=1))
  print(f'Wrote {output}.', file=sys.stderr)


if __name__ == '__main__':
  cli.run(define_flags, main)
