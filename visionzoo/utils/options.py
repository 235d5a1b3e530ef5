"""Option dicts from configs: defaults filled in, unknown keys refused by name."""
from typing import Optional

from .errors import ConfigError

__all__ = ['merged_options', 'positive_int']


def merged_options(name: str, given: Optional[dict], defaults: dict) -> dict:
    """``defaults`` updated with ``given``; a key ``defaults`` lacks is a :class:`ConfigError` naming ``name``."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f'{name}: unknown option(s) {unknown}; expected some of {sorted(defaults)}')
    return {**defaults, **given}


def positive_int(name: str, value) -> int:
    """``value`` if it is an int >= 1 (not a bool), else a :class:`ConfigError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f'{name}: expected a positive int, got {value!r}')
    return value
