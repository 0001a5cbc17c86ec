"""inception_jax: Inception-v3, Inception-v4 and Inception-ResNet in JAX/Flax."""

from pathlib import Path
import re

from setuptools import find_packages, setup

version = re.search(r"__version__ = '([^']+)'",
                    Path(__file__).with_name('inception_jax').joinpath('__init__.py').read_text())[1]

setup(
    name='inception_jax',
    version=version,
    description=('Inception-v4, Inception-ResNet and Inception-v3 in JAX/Flax: models, training, '
                 'weights.'),
    long_description=Path(__file__).with_name('README.md').read_text(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['inception_jax', 'inception_jax.*']),
    package_data={'inception_jax': ['imagenet_classes.tsv']},
    python_requires='>=3.10',
    install_requires=[
        'absl-py',
        'flax>=0.10',
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
        # tf.data only: a CPU build keeps TensorFlow off the accelerators that JAX owns.
        'tensorflow-cpu; sys_platform != "darwin"',
        'tensorflow; sys_platform == "darwin"',
    ],
    extras_require={
        'test': ['pytest', 'pytest-xdist', 'ruff'],
        # libtpu, matched to the installed jax by jax's own extra: runs the job on Cloud TPU VMs,
        # and lets `python -m inception_jax.aot` compile for TPU slices on any machine.
        'tpu': ['jax[tpu]'],
    },
)
