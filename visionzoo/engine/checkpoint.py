"""Checkpoint loading with ``torch.load(weights_only=True)`` that still reads Runner checkpoints.

mmengine 0.10.7 saves its ``message_hub`` inside Runner checkpoints: ``HistoryBuffer`` objects whose state
holds references to ``HistoryBuffer.min``/``max``/... (pickled through ``getattr``) and numpy arrays and
scalars. torch >= 2.6 refuses those under its ``weights_only=True`` default, so ``resume`` and loading a
Runner checkpoint fail. We never fall back to ``weights_only=False``: instead the loader allow-lists exactly
those types for the duration of one load, with ``getattr`` replaced by a function that only resolves the
registered statistics of ``HistoryBuffer``. ``argparse.Namespace`` is admitted too: official checkpoints written by
DeiT-style training scripts (Vim's among them) keep their command line in an ``args`` entry.
"""
import argparse
import os
import pickle
from typing import Any, Optional, Tuple

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from ..utils.errors import CheckpointError

__all__ = ['safe_load', 'runner_safe_globals', 'load_state_dict_file', 'load_model_weights',
           'install_checkpoint_loader', 'model_state', 'state_dict_mismatch']


_HISTORY_STATISTICS = ('min', 'max', 'current', 'mean')


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """Stand-in for ``builtins.getattr`` while unpickling: resolves only HistoryBuffer statistics methods."""
    allowed = set(_HISTORY_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if obj is HistoryBuffer and name in allowed:
        return getattr(obj, name)
    what = obj.__name__ if isinstance(obj, type) else type(obj).__name__
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({what}, {name!r}); only HistoryBuffer statistics '
        f'({", ".join(sorted(allowed))}) are allowed')


def runner_safe_globals() -> list:
    """The globals Runner and DeiT-style checkpoints need beyond tensors and plain containers."""
    multiarray = np._core.multiarray if hasattr(np, '_core') else np.core.multiarray
    allowed = [
        argparse.Namespace,  # the "args" entry of DeiT-style training checkpoints (Vim and most official releases)
        HistoryBuffer,
        (_history_buffer_getattr, 'builtins.getattr'),
        np.ndarray,
        np.dtype,
        (multiarray._reconstruct, 'numpy.core.multiarray._reconstruct'),
        (multiarray._reconstruct, 'numpy._core.multiarray._reconstruct'),
        (multiarray.scalar, 'numpy.core.multiarray.scalar'),
        (multiarray.scalar, 'numpy._core.multiarray.scalar'),
    ]
    # numpy >= 1.25 pickles dtypes of arrays as numpy.dtypes.<Name>DType classes
    dtypes = getattr(np, 'dtypes', None)
    if dtypes is not None:
        for name in dir(dtypes):
            if name.endswith('DType') and name not in ('StringDType',):
                allowed.append(getattr(dtypes, name))
    return allowed


def safe_load(filename: str, map_location: Optional[Any] = 'cpu') -> Any:
    """``torch.load(filename, weights_only=True)`` that also reads mmengine Runner checkpoints.

    Raises:
        CheckpointError: the file does not exist, is not a torch checkpoint, or holds objects outside the
            allow-list (the message names the file and the offending global).
    """
    if not os.path.isfile(filename):
        raise CheckpointError(f'checkpoint file not found: {filename}')
    try:
        with torch.serialization.safe_globals(runner_safe_globals()):
            return torch.load(filename, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f'{filename}: refused: {_refusal(filename, e)}. Expected a torch.save file of tensors '
                              f'(a state_dict) or an mmengine Runner checkpoint; re-save only the state_dict of such '
                              f'a file where you trust it') from None
    except Exception as e:  # truncated zip, text file, foreign pickle: torch raises many kinds
        raise CheckpointError(
            f'{filename}: not a PyTorch checkpoint ({_reason(e)}). Expected a file written by torch.save '
            f'(a state_dict, or a dict with a "state_dict"/"model" entry).') from None


def _refusal(filename: str, e: BaseException) -> str:
    """Why a weights-only load refused ``filename``: the globals outside the allow-list, by name (torch's own text
    advises ``weights_only=False``, i.e. running the file's code, which we never do)."""
    try:
        found = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:  # not a zip checkpoint: fall back to the unpickler's reason
        found = []
    allowed = set()
    for g in runner_safe_globals():
        allowed.add(g[1] if isinstance(g, tuple) else f'{g.__module__}.{g.__qualname__}')
    names = [n for n in found if n not in allowed]
    if names:
        shown = ', '.join(names[:5]) + (f', ... ({len(names)} in all)' if len(names) > 5 else '')
        return (f'it holds objects of {shown}, outside the allow-list of a weights-only load (unpickling them could '
                f'run arbitrary code)')
    if 'getattr' in str(e):
        return _reason(e)
    return f'{_reason(e)} (outside the allow-list of a weights-only load)'


def _reason(e: BaseException) -> str:
    """The informative line of a torch.load error (torch puts the unpickler's reason after a preamble)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()
             and not ln.startswith(('Weights only load failed', 'Check the documentation of torch.load'))]
    for i, ln in enumerate(lines):
        if 'WeightsUnpickler error:' in ln:
            rest = ln.split('WeightsUnpickler error:', 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else lines[0])
    return lines[0] if lines else type(e).__name__


def load_state_dict_file(filename: str, map_location: Optional[Any] = 'cpu') -> dict:
    """Load a checkpoint file and return the model weights it holds.

    Accepts a plain state_dict or a dict with a ``state_dict``, ``model`` or ``module`` entry (mmengine
    Runner, DeiT/timm-style training scripts and most official releases).
    """
    ckpt = safe_load(filename, map_location)
    if not isinstance(ckpt, dict):
        raise CheckpointError(f'{filename}: expected a dict of tensors, got {type(ckpt).__name__}')
    for key in ('state_dict', 'model', 'module'):
        if key in ckpt and isinstance(ckpt[key], dict):
            ckpt = ckpt[key]
            break
    if not ckpt or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise CheckpointError(f'{filename}: no tensors found (expected a state_dict of parameter tensors)')
    return ckpt


def _load_from_local(filename: str, map_location=None):
    """mmengine CheckpointLoader scheme for local paths, replacing its plain ``torch.load``."""
    filename = os.path.expanduser(filename)
    return safe_load(filename, map_location=map_location)


def install_checkpoint_loader() -> None:
    """Make every local checkpoint mmengine reads (``Runner.resume``, ``load_from``, ``init_cfg=Pretrained``) go
    through :func:`safe_load`.

    Replaces the scheme mmengine's ``CheckpointLoader`` uses for plain paths. Called by the tools' setup
    (:func:`visionzoo.engine.runner_utils.setup_train_cfg` / ``setup_test_cfg``), not on import; calling it again
    changes nothing.
    """
    if CheckpointLoader._schemes.get('') is not _load_from_local:
        CheckpointLoader.register_scheme(prefixes='', force=True)(_load_from_local)


def model_state(model: torch.nn.Module, state: dict) -> dict:
    """A checkpoint's weights in ``model``'s key names: a DDP ``module.`` prefix dropped, then the model's
    ``convert_checkpoint(state)`` where it has one (official layouts -> the model's keys). Unchanged weights come back
    as the same dict."""
    if state and all(k.startswith('module.') for k in state):
        state = {k[len('module.'):]: v for k, v in state.items()}
    convert = getattr(model, 'convert_checkpoint', None)
    return convert(state) if callable(convert) else state


def state_dict_mismatch(own: dict, state: dict, allowed=lambda key: False) -> Tuple[list, list, list]:
    """``(missing, unexpected, wrong)`` of ``state`` against the model's ``own`` state dict, leaving out keys that
    ``allowed`` accepts; ``wrong`` lists ``'key (checkpoint shape) vs (model shape)'``."""
    missing = [k for k in own if k not in state and not allowed(k)]
    unexpected = [k for k in state if k not in own and not allowed(k)]
    wrong = [f'{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}' for k in own
             if k in state and tuple(state[k].shape) != tuple(own[k].shape) and not allowed(k)]
    return missing, unexpected, wrong


def load_model_weights(model: torch.nn.Module, state: dict, filename: str) -> None:
    """Load ``state`` (from :func:`load_state_dict_file` of ``filename``) into ``model`` strictly, after
    :func:`model_state` (the model's ``convert_checkpoint``, e.g. ``EncoderDecoder``'s for official layouts).

    Raises:
        CheckpointError: naming ``filename`` and the missing, unexpected or wrongly shaped keys.
    """
    state = model_state(model, state)
    missing, unexpected, wrong = state_dict_mismatch(model.state_dict(), state)
    if missing or unexpected or wrong:
        parts = []
        for name, keys in (('missing', missing), ('unexpected', unexpected), ('shape mismatch', wrong)):
            if keys:
                parts.append(f'{len(keys)} {name} (e.g. {", ".join(keys[:3])})')
        raise CheckpointError(f'{filename}: weights do not fit the model built from the config: ' + '; '.join(parts))
    model.load_state_dict(state, strict=True)
