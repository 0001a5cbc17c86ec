"""Training-step throughput: compile time, images/s, peak memory, FLOPs and MFU, optionally beside
timm (PyTorch) timed in the same process.

    python benchmarks/train_step.py --model=inception_resnet_v2 --batch=8 --image_size=299 \
        [--dtype=bfloat16] [--compare_timm] [--trainable_scopes=Logits] [--json]

The step is the training job's own (`inception_jax.steps.train_step`: forward, backward, gradient
clipping, RMSProp with TF semantics, BatchNorm statistics, the parameter EMA and the metrics).
timm's step: forward, label-smoothed cross-entropy, backward, clipping, `torch.optim.RMSprop` (decay
0.9, eps 1.0, momentum 0.9, weight decay 4e-5); bfloat16 means torch.autocast and channels-last on
GPU.
--trainable_scopes times, taking turns with the full step, the step that trains only those scopes
(config.trainable_scopes: `Logits` is a linear probe, which computes no gradient for the backbone).
See benchmarks/harness.py for how timing, memory and MFU are measured.
"""

import harness

if __name__ == '__main__':
  harness.main(__doc__, train=True)
