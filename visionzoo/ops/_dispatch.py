"""Backend choice shared by the ops: the ``backend=`` argument, else an environment variable, else ``'auto'``."""
import os
from typing import Optional, Sequence

__all__ = ['requested_backend']


def requested_backend(backend: Optional[str], env_var: str, choices: Sequence[str]) -> str:
    """The backend name asked for, validated against ``choices`` (ValueError naming its source otherwise)."""
    name = (backend if backend is not None else (os.environ.get(env_var) or 'auto')).strip().lower()
    if name not in choices:
        source = 'backend' if backend is not None else env_var
        raise ValueError(f'{source} must be one of {tuple(choices)}, got {name!r}')
    return name
