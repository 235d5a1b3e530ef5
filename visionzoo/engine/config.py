"""Config loading for the tools: clear errors for missing files, malformed options, unknown types, unknown argument
names and bad values."""
import argparse
import difflib
import inspect
import math
import os
import re
import sys
import warnings
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from mmengine.config import Config, ConfigDict, DictAction

from ..utils.errors import ConfigError

__all__ = ['load_config', 'parse_cfg_options', 'CfgOptionsAction', 'check_types', 'check_config', 'check_values',
           'warn_unknown_top_level_keys', 'timm_model_arguments', 'registered_type_names', 'ConfigWarning']


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
    """The tools' config check, run before anything is built: :func:`check_config` (unknown types, unknown
    argument names, bad values; warnings for misspelled top-level keys)."""
    check_config(cfg, source)


def _check_registered_types(cfg: Config, source: str) -> None:
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


# ------------------------------------------------------------------------------------ argument names and values
# Top-level keys that mmengine's Runner (``Runner.__init__``/``from_cfg``, ``wrap_model``, the runner builder) or
# the tools read; any other top-level key is a helper variable of the config, or a misspelling.
_RUNNER_KEYS = frozenset({
    'model', 'work_dir', 'train_dataloader', 'val_dataloader', 'test_dataloader', 'train_cfg', 'val_cfg', 'test_cfg',
    'auto_scale_lr', 'optim_wrapper', 'param_scheduler', 'val_evaluator', 'test_evaluator', 'default_hooks',
    'custom_hooks', 'data_preprocessor', 'load_from', 'resume', 'launcher', 'env_cfg', 'log_processor', 'log_level',
    'visualizer', 'default_scope', 'randomness', 'experiment_name', 'model_wrapper_cfg', 'compile', 'runner_type',
    'strategy', 'custom_imports', 'load_from_ignore_keys'})
# keys a builder takes out of a dict before calling the class, by the dotted path of the dict
_BUILDER_KEYS = {'optim_wrapper': {'constructor', 'paramwise_cfg'}}
# keys of an untyped dataloader dict: mmengine's Runner.build_dataloader takes these out, the rest goes to DataLoader
_DATALOADER_KEYS = {'dataset', 'sampler', 'batch_sampler', 'collate_fn', 'worker_init_fn', 'num_batch_per_epoch'}
_MAX_SHOWN = 25


class ConfigWarning(UserWarning):
    """A config entry that is probably a mistake but does not stop the run (an unknown top-level key)."""


def _registered_objects(name: str) -> list:
    """The classes and functions registered as ``name`` (scope prefix ignored) in any registry."""
    from mmengine.registry import Registry, root
    registered_type_names()  # imports every module that registers something
    bare = name.split('.', 1)[-1]
    found = []

    def visit(reg: Registry):
        obj = reg.module_dict.get(bare)
        if obj is not None and obj not in found:
            found.append(obj)
        for child in reg.children.values():
            visit(child)

    for obj in vars(root).values():
        if isinstance(obj, Registry):
            visit(obj)
    return found


def _parameters(obj, named_only: bool = False) -> Optional[set]:
    """Keyword names ``obj`` (a class: its ``__init__``) accepts; None when it takes ``**kwargs`` (unless
    ``named_only``: then its named ones) or has no signature."""
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None
    params = sig.parameters.values()
    if not named_only and any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _forwards_kwargs_to_super(init, name: str) -> bool:
    """Whether the source of ``init`` passes its ``**name`` on to ``super().__init__``."""
    try:
        src = inspect.getsource(init)
    except (OSError, TypeError):
        return False
    return re.search(r'super\([^)]*\)\.__init__\((?:[^()]|\([^()]*\))*\*\*' + re.escape(name) + r'\b', src) is not None


def _class_arguments(obj) -> Optional[set]:
    """Keyword names a registered class or function accepts. A class whose ``__init__`` takes ``**kwargs`` and
    passes them to ``super().__init__`` also accepts its base's names (up the MRO); None when ``**kwargs`` go
    anywhere else (then the names cannot be known here)."""
    if not isinstance(obj, type):
        return _parameters(obj)
    accepted = set()
    for klass in obj.__mro__:
        if klass is object:  # takes no arguments
            return accepted
        init = klass.__dict__.get('__init__')
        if init is None:
            continue
        names = _parameters(init, named_only=True)
        if names is None:
            return None
        accepted |= names - {'self'}
        var_kw = [p.name for p in inspect.signature(init).parameters.values() if p.kind is p.VAR_KEYWORD]
        if not var_kw:
            return accepted
        if not _forwards_kwargs_to_super(init, var_kw[0]):
            return None
    return None


def timm_model_arguments(model_name: str) -> Optional[set]:
    """Keyword arguments ``timm.create_model(model_name, **kwargs)`` accepts: those of the model class the
    variant builds (found by running the variant function up to timm's ``build_model_with_cfg``, which is not
    called) plus timm's own. None when that cannot be resolved or the class takes ``**kwargs``."""
    import timm
    from timm.models import _builder, _registry
    if not isinstance(model_name, str) or not timm.is_model(model_name):
        return None
    entry = _registry.model_entrypoint(model_name)
    module = sys.modules.get(entry.__module__)
    if module is None or getattr(module, 'build_model_with_cfg', None) is not _builder.build_model_with_cfg:
        return None

    class _Found(Exception):
        pass

    def capture(model_cls, *args, **kwargs):
        raise _Found(model_cls)

    module.build_model_with_cfg = capture
    try:
        entry(pretrained=False)
        return None
    except _Found as found:
        model_cls = found.args[0]
    except Exception:
        return None
    finally:
        module.build_model_with_cfg = _builder.build_model_with_cfg
    own = _parameters(model_cls)
    if own is None:
        return None
    generic = (_parameters(timm.create_model, named_only=True) or set()) | {
        'pretrained_cfg', 'pretrained_cfg_overlay', 'model_cfg', 'feature_cfg', 'pretrained_strict', 'cache_dir',
        'checkpoint_path', 'scriptable', 'exportable', 'no_jit', 'features_only', 'feature_cls', 'out_indices',
        'pruned', 'flatten_sequential', 'output_fmt', 'pretrained'}
    return (own | generic) - {'model_name', 'self'}


def _accepted_keys(node: dict, path: str) -> Tuple[Optional[set], str]:
    """``(accepted keys, what takes them)`` for a config dict, or ``(None, '')`` when unknown or unchecked."""
    from mmengine.hooks import Hook
    from mmengine.optim.scheduler.param_scheduler import _ParamScheduler
    t = node.get('type')
    if isinstance(t, str):
        from ..layers import LAYER_TYPES
        if t.split('.', 1)[-1] in LAYER_TYPES:
            # a norm/activation built by visionzoo.layers.norm_act (which checks its options, requires_grad among
            # them), even where another library registered a class of that name (mmcv registers SyncBN, GN, ...)
            return None, ''
        objs = _registered_objects(t)
        if not objs:
            return None, ''
        accepted = set()
        for obj in objs:
            keys = _class_arguments(obj)
            bare = t.split('.', 1)[-1]
            if keys is None and bare == 'TimmBackbone':  # **model_kwargs go to timm.create_model
                timm_keys = timm_model_arguments(node.get('model_name'))
                if timm_keys is None:
                    return None, ''
                keys = (_parameters(obj, named_only=True) or set()) | timm_keys
            if keys is None:
                return None, ''
            accepted |= keys
            if isinstance(obj, type) and issubclass(obj, Hook):
                accepted.add('priority')  # Runner.register_hook takes it out
            if isinstance(obj, type) and issubclass(obj, _ParamScheduler):
                accepted.add('convert_to_iter_based')  # the Runner's scheduler builder takes it out
        accepted |= _BUILDER_KEYS.get(path, set())
        return accepted | {'type'}, t
    parent, _, last = path.rpartition('.')
    if last in ('train_dataloader', 'val_dataloader', 'test_dataloader') and not parent:
        from torch.utils.data import DataLoader
        return (_parameters(DataLoader) or set()) | _DATALOADER_KEYS, 'DataLoader'
    return None, ''


def _format_unknown(path: str, key: str, owner: str, accepted: set) -> str:
    names = sorted(accepted - {'type', 'self'})
    close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
    hint = f' (did you mean: {", ".join(close)}?)' if close else ''
    shown = ', '.join(names[:_MAX_SHOWN]) + (', ...' if len(names) > _MAX_SHOWN else '')
    return f'{path}.{key}: {owner} takes no argument {key!r}{hint}; accepted: {shown}'


def _check_keys(node, path: str, problems: List[str]) -> None:
    if isinstance(node, (dict, ConfigDict)):
        accepted, owner = _accepted_keys(node, path)
        if accepted is not None:
            for key in node:
                if isinstance(key, str) and not key.startswith('_') and key not in accepted:
                    problems.append(_format_unknown(path, key, owner, accepted))
        # ImageClassifier(backbone=dict(model_name=..., **timm kwargs)): an untyped dict for timm.create_model
        if isinstance(node.get('type'), str) and node['type'].split('.', 1)[-1] == 'ImageClassifier' \
                and isinstance(node.get('backbone'), (dict, ConfigDict)):
            backbone = node['backbone']
            timm_keys = timm_model_arguments(backbone.get('model_name'))
            if timm_keys is not None:
                accepted = timm_keys | {'model_name', 'pretrained'}
                owner = f"timm model {backbone.get('model_name')!r}"
                for key in backbone:
                    if isinstance(key, str) and not key.startswith('_') and key not in accepted:
                        problems.append(_format_unknown(f'{path}.backbone' if path else 'backbone', key, owner,
                                                        accepted))
        for k, v in node.items():
            _check_keys(v, f'{path}.{k}' if path else str(k), problems)
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            _check_keys(v, f'{path}.{i}', problems)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


# (dotted path, test, what is expected)
_VALUE_CHECKS = (
    ('train_cfg.max_epochs', lambda v: _is_int(v) and v > 0, 'a positive int'),
    ('train_cfg.max_iters', lambda v: _is_int(v) and v > 0, 'a positive int'),
    ('train_cfg.val_interval', lambda v: _is_int(v) and v > 0, 'a positive int'),
    ('train_cfg.val_begin', lambda v: _is_int(v) and v >= 0, 'an int >= 0'),
    ('optim_wrapper.optimizer.lr', lambda v: _is_number(v) and v > 0, 'a positive number'),
    ('optim_wrapper.optimizer.weight_decay', lambda v: _is_number(v) and v >= 0, 'a number >= 0'),
    ('optim_wrapper.accumulative_counts', lambda v: _is_int(v) and v > 0, 'a positive int'),
    ('train_dataloader.batch_size', lambda v: _is_int(v) and v > 0, 'a positive int'),
    ('val_dataloader.batch_size', lambda v: _is_int(v) and v > 0, 'a positive int'),
    ('test_dataloader.batch_size', lambda v: _is_int(v) and v > 0, 'a positive int'),
    ('train_dataloader.num_workers', lambda v: _is_int(v) and v >= 0, 'an int >= 0'),
    ('val_dataloader.num_workers', lambda v: _is_int(v) and v >= 0, 'an int >= 0'),
    ('test_dataloader.num_workers', lambda v: _is_int(v) and v >= 0, 'an int >= 0'),
)
_MISSING = object()


def _lookup(node, dotted: str):
    for part in dotted.split('.'):
        if not isinstance(node, (dict, ConfigDict)) or part not in node:
            return _MISSING
        node = node[part]
    return node


def check_values(cfg) -> List[str]:
    """Problems with the values of the schedule, optimizer and dataloader settings every run reads."""
    problems = []
    for dotted, ok, expected in _VALUE_CHECKS:
        value = _lookup(cfg, dotted)
        if value is not _MISSING and value is not None and not ok(value):
            problems.append(f'{dotted}={value!r}: expected {expected}')
    return problems


def warn_unknown_top_level_keys(cfg, source: str = 'config') -> List[str]:
    """Warn (:class:`ConfigWarning`) about top-level keys nobody reads that look like a misspelled Runner key
    (``trian_cfg``); other top-level names are the config's own helper variables (``data_root``). Returns the
    warnings."""
    messages = []
    for key in cfg.keys():
        if not isinstance(key, str) or key.startswith('_') or key in _RUNNER_KEYS:
            continue
        close = difflib.get_close_matches(key, sorted(_RUNNER_KEYS), n=3, cutoff=0.75)
        if close:
            msg = f'top-level key {key!r} is not read by anything (did you mean: {", ".join(close)}?)'
            # shown as '<config>:0: ConfigWarning: <msg>', one line
            warnings.warn_explicit(msg, ConfigWarning, filename=source, lineno=0)
            messages.append(msg)
    return messages


def check_config(cfg: Config, source: str = 'config') -> None:
    """Every check of a config before anything is built: unknown ``type`` names (:func:`check_types`), then in
    one :class:`ConfigError` every argument name the class of its dict does not take (with close matches and the
    accepted names) and every bad schedule/optimizer/dataloader value; unknown top-level keys that look like
    misspellings are warnings."""
    _check_registered_types(cfg, source)
    node = cfg.to_dict() if hasattr(cfg, 'to_dict') else dict(cfg)
    warn_unknown_top_level_keys(node, source)
    problems: List[str] = []
    # an untyped train/val/test loop is built as the Runner's default loop class
    for key, default in (('val_cfg', 'ValLoop'), ('test_cfg', 'TestLoop')):
        if isinstance(node.get(key), dict) and node[key] and 'type' not in node[key]:
            node[key] = dict(node[key], type=default)
    _check_keys(node, '', problems)
    problems += check_values(node)
    if problems:
        raise ConfigError(f'{source}: ' + '; '.join(problems))
