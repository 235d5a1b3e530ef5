"""NAT training and inference on this machine (not a test): the neighbourhood-attention op against dense masked SDPA
and NATTEN's CPU forward, in the same model.

Rows, all measured in one run, all NAT-Tiny (``nat_tiny``) with the same weights except for how its neighbourhood
attention is computed:

* ``masked-sdpa`` (the baseline): every layer's attention as ``torch.nn.functional.scaled_dot_product_attention``
  over the whole map with an additive mask (the relative position bias gathered into the neighbourhood entries,
  ``-inf`` elsewhere; the (N, N) tables come from the op's brute-force reference and are built once per shape,
  outside the timings' steps after the warm-up); autograd backward;
* ``na-op``: ``visionzoo.ops.neighborhood_attention``'s default path (on CPU the tiled PyTorch path with its own
  backward; on CUDA the Triton kernels);
* ``natten-fwd`` (inference only): NATTEN 0.21's ``na2d`` (CPU forward; NATTEN has no CPU backward and no relative
  position bias, so this row runs the model without the bias: the same work minus one addition per logit).

Training step = forward, cross-entropy loss, backward (no optimizer step); times are the best of ``--repeats`` steps
after a warm-up step, forward and backward timed separately. Inference = forward under ``torch.no_grad`` in eval
mode, as images per second. Every (row, measurement) runs in fresh subprocesses: peak memory (growth of the
process's peak resident set during one step, after a batch-1 warm-up, glibc's mmap threshold fixed; CUDA:
``max_memory_allocated``) and timing each in their own (``_common.run_worker``).

Usage::

    python benchmarks/benchmark_nat.py                      # NAT-Tiny, 224², batch 8, CPU, 2 threads
    python benchmarks/benchmark_nat.py --batch 4 --repeats 2 --threads 4
    python benchmarks/benchmark_nat.py --device cuda        # GPU: na-op runs the Triton kernels
    python benchmarks/benchmark_nat.py --rows na-op --no-memory --no-inference --size 64 --batch 1 --repeats 1
"""

import torch
import torch.nn.functional as F

from _common import classifier_step_main

ROWS = ('masked-sdpa', 'na-op', 'natten-fwd')
BASELINE = 'masked-sdpa'
TRAINABLE = ('masked-sdpa', 'na-op')


def masked_sdpa(q, k, v, kernel_size, dilation=1, is_causal=False, rpb=None, scale=None, backend=None):
    """The op's signature (heads-last q, k, v of (B, H, W, heads, d)) computed as dense masked SDPA."""
    import importlib
    reference = importlib.import_module('visionzoo.ops.neighborhood_attention.reference')
    batch, height, width, heads, dim = q.shape
    pair = (lambda t: tuple(t) if isinstance(t, (tuple, list)) else (t, t))
    allowed, rel = reference._tables((height, width), pair(kernel_size), pair(dilation), pair(is_causal))
    allowed, rel = allowed.to(q.device), rel.to(q.device)
    bias = rpb.flatten(1)[:, rel] if rpb is not None else q.new_zeros(heads, *rel.shape)
    mask = bias.to(q.dtype).masked_fill(~allowed, float('-inf'))
    out = F.scaled_dot_product_attention(*(t.flatten(1, 2).transpose(1, 2) for t in (q, k, v)), attn_mask=mask,
                                         scale=scale)
    return out.transpose(1, 2).reshape(q.shape)


def natten_forward(q, k, v, kernel_size, dilation=1, is_causal=False, rpb=None, scale=None, backend=None):
    """NATTEN 0.21's na2d (no bias support: ``rpb`` is left out)."""
    import natten.functional
    return natten.functional.na2d(q, k, v, kernel_size=kernel_size, dilation=dilation, is_causal=is_causal,
                                  scale=scale)


def build(name: str, size: int, device: str) -> torch.nn.Module:
    import timm

    import visionzoo.backbones.nat  # noqa: F401  (registers nat_*)
    import visionzoo.layers.neighborhood_attention as layer
    if name == 'masked-sdpa':
        layer.neighborhood_attention = masked_sdpa
    elif name == 'natten-fwd':
        layer.neighborhood_attention = natten_forward
    torch.manual_seed(0)
    return timm.create_model('nat_tiny').to(device)


def main(argv=None):
    classifier_step_main(__file__, __doc__.split('\n')[0], 'NAT-Tiny', build, ROWS, TRAINABLE, BASELINE, argv)


if __name__ == '__main__':
    main()
