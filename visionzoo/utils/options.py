"""Argument checks for model code: option dicts with defaults and unknown keys refused, positive ints.

Errors are :class:`ArgumentError` whose message starts with the module and argument, ``FCOSHead(num_classes=0):
expected a positive int``; model code knows no config paths (the engine adds them when it reports an error).
"""
from typing import Optional

from .errors import ArgumentError

__all__ = ['argument_error', 'merged_options', 'positive_int']


def argument_error(owner: str, arg: str, value, problem: str) -> ArgumentError:
    """``ArgumentError('Owner(arg=value): problem')``, the message form of every argument error of model code."""
    return ArgumentError(f'{owner}({arg}={value!r}): {problem}')


def merged_options(owner: str, arg: str, given: Optional[dict], defaults: dict) -> dict:
    """``defaults`` updated with ``given``; a key ``defaults`` lacks is an :class:`ArgumentError` naming
    ``owner`` and ``arg``."""
    if given is not None and not isinstance(given, dict):
        raise argument_error(owner, arg, given, f'expected None or a dict with some of {sorted(defaults)}')
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise argument_error(owner, arg, given, f'unknown option(s) {unknown}; expected some of {sorted(defaults)}')
    return {**defaults, **given}


def positive_int(owner: str, arg: str, value) -> int:
    """``value`` if it is an int >= 1 (not a bool), else an :class:`ArgumentError` naming ``owner`` and ``arg``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise argument_error(owner, arg, value, 'expected a positive int')
    return value
