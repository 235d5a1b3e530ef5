"""Helpers shared by the ops' Triton paths (imported only by their ``triton.py`` modules, so only with Triton)."""
import torch
import triton
import triton.language as tl

__all__ = ['interpreting', 'check_device', 'softplus', 'dot', 'fp32_dot']


@triton.jit
def softplus(x):
    """softplus(x) with threshold 20 (identity above it), as ``F.softplus``; log1p written so that small
    ``exp(x)`` keep their precision."""
    e = tl.exp(x)
    e1 = 1.0 + e
    log1p_e = tl.where(e1 == 1.0, e, tl.log(e1) * (e / (e1 - 1.0)))
    return tl.where(x <= 20.0, log1p_e, x)


@triton.jit
def dot(a, b, FP32_DOT: tl.constexpr):
    """a @ b accumulated in float32; full-precision products for float32 operands when FP32_DOT (no TF32)."""
    if FP32_DOT:
        out = tl.dot(a, b, input_precision='ieee')
    else:
        out = tl.dot(a, b)
    return out


def fp32_dot(dtype: torch.dtype) -> bool:
    """Whether ``dot`` should multiply in full float32: float32 inputs (no TF32), and bfloat16 under the
    interpreter, whose ``tl.dot`` misreads bfloat16 operands (Triton 3.8)."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and interpreting())


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
