"""Helpers shared by the ops' Triton paths (imported only by their ``triton.py`` modules, so only with Triton)."""
import torch
import triton
import triton.language as tl

__all__ = ['interpreting', 'check_device', 'softplus']


@triton.jit
def softplus(x):
    """softplus(x) with threshold 20 (identity above it), as ``F.softplus``; log1p written so that small
    ``exp(x)`` keep their precision."""
    e = tl.exp(x)
    e1 = 1.0 + e
    log1p_e = tl.where(e1 == 1.0, e, tl.log(e1) * (e / (e1 - 1.0)))
    return tl.where(x <= 20.0, log1p_e, x)


def interpreting() -> bool:
    """Whether kernels run in Triton's interpreter (Triton was imported with ``TRITON_INTERPRET=1``)."""
    return type(softplus).__name__ == 'InterpretedFunction'


def check_device(x: torch.Tensor, what: str) -> None:
    """RuntimeError unless ``x`` is on CUDA, or Triton runs interpreted (for tests); ``what`` names the op."""
    if x.is_cuda:
        return
    if interpreting() and isinstance(tl.sum, triton.runtime.jit.JITFunction):
        raise RuntimeError('the Triton kernels were imported under TRITON_INTERPRET=1 but triton itself was not: set '
                           'TRITON_INTERPRET=1 before the first import of triton')
    if not interpreting():
        raise RuntimeError(f'the Triton {what} runs on CUDA tensors; for CPU tensors Triton must be imported with '
                           'TRITON_INTERPRET=1 in the environment (slow, for tests) — use the torch backend')
