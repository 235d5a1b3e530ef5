"""One-line reports of user-input errors, with the config path of the part that raised them.

Model code raises :class:`~visionzoo.utils.errors.ArgumentError` with messages that start with the class and the
argument (``FCOSHead(num_classes=0): expected a positive int``) and knows nothing of configs. When such an error
comes out of a Runner built from a config, :func:`config_paths_in_errors` names the config file and, if exactly one
dict of the config has that ``type``, its dotted path: ``cfg.py: model.bbox_head: FCOSHead(num_classes=0): ...``.
"""
import re
from contextlib import contextmanager
from typing import List

from ..utils.errors import VisionzooError

__all__ = ['format_error', 'config_paths_in_errors', 'type_paths']

# what mmengine registries before 0.10 and mmcv's build_from_cfg put in front of an error raised while building
_REGISTRY_PREFIX = re.compile(r'^class `\w+` in [^:]*: ')
_CLASS_CALL = re.compile(r'^([A-Za-z_]\w*)\(')


def format_error(e: BaseException) -> str:
    """One line for a user-input error: the message of one re-raised from a DataLoader worker, without the
    ``class `X` in module: `` prefixes a registry adds while re-raising build errors."""
    msg = str(e)
    if 'Original Traceback' in msg:
        last = [ln for ln in msg.strip().splitlines() if ln.strip()][-1]
        msg = re.sub(r'^[\w.]*(Error|Exception): ', '', last.strip())
    while _REGISTRY_PREFIX.match(msg):
        msg = _REGISTRY_PREFIX.sub('', msg, count=1)
    return msg


def type_paths(cfg, class_name: str) -> List[str]:
    """Dotted paths of the dicts in ``cfg`` whose ``type`` is ``class_name`` (a scope prefix is ignored)."""
    from .config import walk_types
    node = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    return [key[:-len('.type')] for key, name in walk_types(node, '')
            if key.endswith('.type') and name.split('.')[-1] == class_name]


@contextmanager
def config_paths_in_errors(cfg, config_path: str):
    """Re-raise a :class:`VisionzooError` whose message starts with ``ClassName(`` (an argument error of model
    code) with ``<config_path>: <dotted path>: `` in front; the dotted path only when exactly one dict of ``cfg``
    has ``type=ClassName``. The error keeps its class; other errors pass unchanged.
    """
    try:
        yield
    except VisionzooError as e:
        msg = format_error(e)
        m = _CLASS_CALL.match(msg)
        if not m:  # errors about files, datasets, options already name what they are about
            raise
        paths = type_paths(cfg, m.group(1))
        where = f'{paths[0]}: ' if len(paths) == 1 else ''
        raise type(e)(f'{config_path}: {where}{msg}') from e
