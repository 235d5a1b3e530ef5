"""Backend choice shared by the ops: the ``backend=`` argument, else an environment variable, else ``'auto'``."""
import functools
import importlib
import os
from types import ModuleType
from typing import Callable, Optional, Sequence

import torch

__all__ = ['requested_backend', 'pick_backend', 'triton_path', 'TRITON_FLOATS']

TRITON_FLOATS = (torch.float16, torch.bfloat16, torch.float32)


@functools.lru_cache(maxsize=None)
def triton_path(package: str) -> Optional[ModuleType]:
    """The Triton path module of an op package (``<package>.triton``), imported on first use; None when Triton is
    not installed."""
    try:
        return importlib.import_module('.triton', package)
    except ImportError:
        return None


def requested_backend(backend: Optional[str], env_var: str, choices: Sequence[str]) -> str:
    """The backend name asked for, validated against ``choices`` (ValueError naming its source otherwise)."""
    name = (backend if backend is not None else (os.environ.get(env_var) or 'auto')).strip().lower()
    if name not in choices:
        source = 'backend' if backend is not None else env_var
        raise ValueError(f'{source} must be one of {tuple(choices)}, got {name!r}')
    return name


def pick_backend(backend: Optional[str], env_var: str, choices: Sequence[str], x: torch.Tensor, arg_name: str,
                 triton_available: Callable[[], bool]) -> str:
    """The path an op runs on its input ``x`` (named ``arg_name`` in errors).

    ``'auto'`` resolves to ``'triton'`` for CUDA tensors of a Triton dtype when Triton imports, else ``'torch'``;
    an explicit ``'triton'`` needs Triton (RuntimeError) and a float16/bfloat16/float32 ``x`` (ValueError).
    """
    name = requested_backend(backend, env_var, choices)
    if name == 'auto':
        return 'triton' if x.is_cuda and x.dtype in TRITON_FLOATS and triton_available() else 'torch'
    if name == 'triton':
        if not triton_available():
            raise RuntimeError("backend 'triton' needs the triton package, which is not importable")
        if x.dtype not in TRITON_FLOATS:
            raise ValueError(f"backend 'triton' takes float16, bfloat16 or float32 inputs, got {arg_name} of dtype "
                             f"{x.dtype}")
    return name
