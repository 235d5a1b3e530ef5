"""Option dicts from configs: defaults filled in, unknown keys refused by name."""
from typing import Optional

from .errors import ConfigError

__all__ = ['merged_options']


def merged_options(name: str, given: Optional[dict], defaults: dict) -> dict:
    """``defaults`` updated with ``given``; a key ``defaults`` lacks is a :class:`ConfigError` naming ``name``."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        raise ConfigError(f'{name}: unknown option(s) {unknown}; expected some of {sorted(defaults)}')
    return {**defaults, **given}
