"""BiFormer training and inference on this machine (not a test): the routed-attention op against the official gather.

Rows, all measured in one run:

* ``bra-gather`` (the baseline): BiFormer-T with its routed attention on the official formulation
  (``VISIONZOO_BRA_BACKEND=reference``: ``torch.gather`` from an expanded view, autograd backward);
* ``bra-op``: BiFormer-T on ``visionzoo.ops.routing_attention``'s default path (on CPU the PyTorch path with the
  index gather and scatter backward; on CUDA the Triton kernels);
* ``swin-tiny`` (inference only, for context): timm's ``swin_tiny_patch4_window7_224``.

Training step = forward, cross-entropy loss, backward (BatchNorm in train mode, no optimizer step); times are the
best of ``--repeats`` steps after a warm-up step, forward and backward timed separately. Inference = forward under
``torch.no_grad`` in eval mode, reported as images per second. Every (model, measurement) runs in fresh
subprocesses: peak memory (growth of the process's peak resident set during one step, after a batch-1 warm-up, with
glibc's mmap threshold fixed so freed buffers leave the resident set; CUDA: ``max_memory_allocated``) and timing
(default allocator) each in their own (``_common.run_worker``).

Usage::

    python benchmarks/benchmark_biformer.py                 # 224², batch 8, CPU, 2 threads
    python benchmarks/benchmark_biformer.py --batch 4 --repeats 2 --threads 4
    python benchmarks/benchmark_biformer.py --device cuda   # GPU: bra-op runs the Triton kernels
    python benchmarks/benchmark_biformer.py --rows bra-op --no-memory --no-inference --size 64 --batch 1 --repeats 1
"""
import os

import torch

from _common import classifier_step_main

ROWS = ('bra-gather', 'bra-op', 'swin-tiny')
BASELINE = 'bra-gather'
TRAINABLE = ('bra-gather', 'bra-op')


def build(name: str, size: int, device: str) -> torch.nn.Module:
    import timm

    import visionzoo.backbones.biformer  # noqa: F401  (registers biformer_*)
    if name == 'swin-tiny':  # timm's Swin checks the input size: built for --size
        return timm.create_model('swin_tiny_patch4_window7_224', img_size=size).to(device)
    os.environ['VISIONZOO_BRA_BACKEND'] = 'reference' if name == 'bra-gather' else 'auto'
    return timm.create_model('biformer_tiny').to(device)


def main(argv=None):
    classifier_step_main(__file__, __doc__.split('\n')[0], 'BiFormer-T', build, ROWS, TRAINABLE, BASELINE, argv)


if __name__ == '__main__':
    main()
