"""Config loading for the tools: clear errors for missing files, malformed options and unknown types."""
import argparse
import difflib
import os
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict, DictAction

from ..utils.errors import ConfigError

__all__ = ['load_config', 'parse_cfg_options', 'CfgOptionsAction', 'check_types', 'registered_type_names']


def _balanced(text: str) -> bool:
    pairs = {')': '(', ']': '['}
    stack, quote = [], None
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in '\'"':
            quote = ch
        elif ch in '([':
            stack.append(ch)
        elif ch in ')]':
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack and quote is None


def parse_cfg_options(pairs: Sequence[str]) -> Dict[str, object]:
    """Parse ``key=value`` items as mmengine's ``--cfg-options`` does, rejecting malformed pairs.

    Values: ints, floats, ``True``/``False``/``None``, lists ``[a,b]`` and tuples ``(a,b)`` (nested, no spaces
    needed), anything else a string. Keys are dotted paths (``train_cfg.max_epochs``, ``model.head.num_classes``,
    ``train_dataloader.dataset.pipeline.0.scale``).
    """
    options: Dict[str, object] = {}
    for kv in pairs:
        key, sep, val = kv.partition('=')
        key = key.strip()
        if not sep or not key or any(c.isspace() for c in key) or key.startswith('.') or key.endswith('.') \
                or '..' in key:
            raise ConfigError(f'--cfg-options: malformed pair {kv!r}; expected key=value with a dotted key, '
                              f'e.g. train_cfg.max_epochs=2 or model.backbone.model_name=resnet18')
        if not _balanced(val):
            raise ConfigError(f'--cfg-options: unbalanced brackets or quotes in the value of {key!r}: {val!r}')
        options[key] = DictAction._parse_iterable(val)
    return options


class CfgOptionsAction(argparse.Action):
    """argparse action for ``--cfg-options k=v ...`` that reports malformed pairs as a usage error."""

    def __call__(self, parser, namespace, values, option_string=None):
        options = dict(getattr(namespace, self.dest, None) or {})
        try:
            options.update(parse_cfg_options(values or []))
        except ConfigError as e:
            parser.error(str(e))
        setattr(namespace, self.dest, options)


def load_config(path: str, cfg_options: Optional[dict] = None) -> Config:
    """``Config.fromfile`` + ``merge_from_dict`` with errors that name the file or option."""
    if not path or not os.path.isfile(path):
        raise ConfigError(f'config file not found: {path!r}')
    if not path.endswith('.py'):
        raise ConfigError(f'{path}: expected a Python config file (.py)')
    try:
        cfg = Config.fromfile(path)
    except SyntaxError as e:
        raise ConfigError(f'{path}: syntax error in the config (line {e.lineno}): {e.msg}') from None
    except Exception as e:  # missing _base_ files, NameError in the config, ...
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f'{path}: cannot load config: {msg}') from None
    if cfg_options:
        try:
            cfg.merge_from_dict(cfg_options)
        except Exception as e:
            raise ConfigError(f'--cfg-options: cannot apply {cfg_options}: {e}') from None
    return cfg


def registered_type_names() -> set:
    """Every name registered in mmengine's root registries and their children (visionzoo's among them), plus the
    norm and activation layer names the necks and backbones build themselves."""
    import mmengine.dataset  # noqa: F401  (register mmengine's own modules)
    import mmengine.evaluator  # noqa: F401
    import mmengine.hooks  # noqa: F401
    import mmengine.model  # noqa: F401
    import mmengine.optim  # noqa: F401
    import mmengine.runner  # noqa: F401
    import mmengine.visualization  # noqa: F401
    from mmengine.registry import Registry, root

    from .. import registry as vz_registry
    for reg in vz_registry.ALL_REGISTRIES.values():
        reg.import_from_location()

    names = set()

    def visit(reg: Registry):
        names.update(reg.module_dict)
        for child in reg.children.values():
            visit(child)

    for obj in vars(root).values():
        if isinstance(obj, Registry):
            visit(obj)
    # norm and activation layers named in configs (norm=dict(type='GN'), out_norm=dict(type='LN', eps=...))
    from ..layers import LAYER_TYPES
    return names | LAYER_TYPES


def walk_types(node, path: str) -> Iterator[Tuple[str, str]]:
    """``(dotted key of the type entry, type name)`` for every dict with a string ``type`` inside ``node``."""
    if isinstance(node, (dict, ConfigDict)):
        t = node.get('type')
        if isinstance(t, str):
            yield path + '.type' if path else 'type', t
        for k, v in node.items():
            yield from walk_types(v, f'{path}.{k}' if path else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from walk_types(v, f'{path}.{i}')


def check_types(cfg: Config, source: str = 'config') -> None:
    """Raise one ConfigError for every ``type='...'`` no registry knows, with close matches for each."""
    known = registered_type_names()
    problems: List[str] = []
    for key, name in walk_types(cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg), ''):
        bare = name.split('.', 1)[-1]  # 'mmengine.AdamW': a scope prefix, as mmengine allows
        if name in known or bare in known:
            continue
        close = difflib.get_close_matches(bare, sorted(known), n=5, cutoff=0.6)
        hint = f' (did you mean: {", ".join(close)}?)' if close else ''
        problems.append(f'{key}={name!r} is not a registered type{hint}')
    if problems:
        raise ConfigError(f'{source}: ' + '; '.join(problems))
