"""What the tools do around mmengine's Runner: work-dir safety, resume, device fixes, the optimizer wrapper.

:func:`setup_train_cfg` and :func:`setup_test_cfg` are the one place where a tool's flags meet the config; both
install the weights-only checkpoint loader (:func:`~visionzoo.engine.checkpoint.install_checkpoint_loader`).
"""
import glob
import os
import warnings
from typing import Optional

import torch
from mmengine.config import Config

from ..utils.errors import CheckpointError, ConfigError
from .checkpoint import install_checkpoint_loader
from .optim import NONFINITE_LOSS_MODES, amp_optim_wrapper_type
from .resume import resolve_last_checkpoint

__all__ = ['existing_checkpoints', 'check_work_dir', 'resolve_work_dir', 'setup_train_cfg', 'setup_test_cfg',
           'adapt_to_device', 'init_cpu_distributed', 'use_visionzoo_runner_parts', 'use_guarded_optim_wrapper',
           'use_checkpoint_checks', 'use_model_eval_transform']


def resolve_work_dir(cfg, work_dir: Optional[str], config_path: str) -> None:
    """``--work-dir`` wins, then the config's ``work_dir``, then ``work_dirs/<config name>``."""
    if work_dir:
        cfg.work_dir = work_dir
    elif not cfg.get('work_dir'):
        cfg.work_dir = os.path.join('work_dirs', os.path.splitext(os.path.basename(config_path))[0])


def existing_checkpoints(work_dir: str) -> list:
    """Checkpoint files (``*.pth``) and the ``last_checkpoint`` marker already in ``work_dir``."""
    if not os.path.isdir(work_dir):
        return []
    found = sorted(os.path.basename(p) for p in glob.glob(os.path.join(work_dir, '*.pth')))
    if os.path.exists(os.path.join(work_dir, 'last_checkpoint')):
        found.append('last_checkpoint')
    return found


def check_work_dir(work_dir: str, resume) -> None:
    """Refuse to start a fresh run in a work dir that holds checkpoints: they would be overwritten."""
    found = existing_checkpoints(work_dir)
    if found and not resume:
        shown = ', '.join(found[:4]) + (', ...' if len(found) > 4 else '')
        raise ConfigError(f'work dir {work_dir} already holds checkpoints ({shown}); pass --resume to continue '
                          f'that run, or choose another --work-dir')


def _sync_bn_to_bn(node, path: str, changed: list) -> None:
    """``norm``/``norm_cfg`` entries of type SyncBN (a dict or the bare name) below ``node`` become BN."""
    if isinstance(node, dict):
        for key, value in node.items():
            where = f'{path}.{key}'
            if key in ('norm', 'norm_cfg', 'norm_layer'):
                if value == 'SyncBN':
                    node[key] = 'BN'
                    changed.append(where)
                    continue
                if isinstance(value, dict) and value.get('type') == 'SyncBN':
                    value['type'] = 'BN'
                    changed.append(where)
            _sync_bn_to_bn(value, where, changed)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            _sync_bn_to_bn(value, f'{path}[{i}]', changed)


def adapt_to_device(cfg: Config) -> None:
    """Settings that must differ without CUDA: gloo for distributed runs, CPU DDP without device ids, and
    ``SyncBN`` norms as ``BN`` in distributed runs (torch's SyncBatchNorm refuses CPU tensors once a process group
    exists; the parameter names are the same, so checkpoints load either way)."""
    if not torch.cuda.is_available() and cfg.get('launcher', 'none') != 'none' and isinstance(cfg.get('model'), dict):
        changed = []
        _sync_bn_to_bn(cfg.model, 'model', changed)
        if changed:
            warnings.warn(f'SyncBN needs CUDA: {", ".join(changed)} use BN on CPU (each process normalises with its '
                          f'own batch)')
    if not torch.cuda.is_available():
        env = cfg.setdefault('env_cfg', {})
        dist = env.setdefault('dist_cfg', {})
        if dist.get('backend', 'nccl') == 'nccl':
            dist['backend'] = 'gloo'
        if cfg.get('launcher', 'none') != 'none':
            wrapper = cfg.get('model_wrapper_cfg') or dict(type='MMDistributedDataParallel')
            wrapper.setdefault('device_ids', None)
            cfg.model_wrapper_cfg = wrapper
        wrapper_type = (cfg.get('optim_wrapper') or {}).get('type')
        cuda_only = ('AmpOptimWrapper', 'GuardedAmpOptimWrapper')
        if isinstance(wrapper_type, str) and wrapper_type.split('.')[-1] in cuda_only:
            raise ConfigError(f"optim_wrapper.type={wrapper_type!r} needs a CUDA device; on CPU use "
                              "type='CPUAmpOptimWrapper' (bf16 autocast), or pass --amp to choose by device")


def use_visionzoo_runner_parts(cfg: Config) -> None:
    """Point the two places where mmengine's Runner bypasses the ``visionzoo`` scope at our registry entries.

    - ``collate_fn=dict(type=NAME)``: the Runner looks NAME up in mmengine's root ``FUNCTIONS`` only, so a collate
      function registered by visionzoo (``det_collate``) gets its scope prefix.
    - ``train_cfg=dict(by_epoch=True, ...)`` without ``type``: the Runner instantiates mmengine's epoch loop
      directly; it becomes ``type='EpochBasedTrainLoop'``, i.e. ours (it resumes inside an epoch). Likewise
      ``val_cfg``/``test_cfg`` become our ``ValLoop``/``TestLoop`` (they never score a sample twice).
    """
    from mmengine.registry import FUNCTIONS as ROOT_FUNCTIONS

    from ..registry import FUNCTIONS
    FUNCTIONS.import_from_location()
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        collate = (cfg.get(key) or {}).get('collate_fn') or {}
        name = collate.get('type')
        if isinstance(name, str) and '.' not in name and ROOT_FUNCTIONS.get(name) is None and name in FUNCTIONS:
            collate['type'] = f'{FUNCTIONS.scope}.{name}'
    train_cfg = cfg.get('train_cfg')
    if train_cfg and 'type' not in train_cfg and train_cfg.get('by_epoch', True):
        train_cfg.pop('by_epoch', None)
        train_cfg['type'] = 'EpochBasedTrainLoop'
    for key, loop in (('val_cfg', 'ValLoop'), ('test_cfg', 'TestLoop')):
        if isinstance(cfg.get(key), dict) and 'type' not in cfg[key] and cfg.get(key.replace('cfg', 'dataloader')):
            cfg[key]['type'] = loop


def use_checkpoint_checks(cfg: Config) -> None:
    """Check ``load_from``/``--resume`` checkpoints against the model before anything is restored
    (:class:`~visionzoo.engine.resume.CheckpointKeysHook`, with the config's ``load_from_ignore_keys``)."""
    hooks = list(cfg.get('custom_hooks') or [])
    if not any(isinstance(h, dict) and str(h.get('type', '')).endswith('CheckpointKeysHook') for h in hooks):
        hooks.append(dict(type='CheckpointKeysHook', ignore_keys=cfg.get('load_from_ignore_keys')))
    cfg.custom_hooks = hooks


_GUARDED = {'OptimWrapper': 'GuardedOptimWrapper', 'AmpOptimWrapper': 'GuardedAmpOptimWrapper'}
_GUARDED_TYPES = set(_GUARDED.values()) | {'CPUAmpOptimWrapper'}


def _pop_model_nonfinite_loss(cfg: Config) -> Optional[str]:
    """The earlier spelling ``model.nonfinite_loss``, taken out of the model config (models no longer take it)."""
    model = cfg.get('model')
    if isinstance(model, dict) and 'nonfinite_loss' in model:
        return model.pop('nonfinite_loss')
    return None


def use_guarded_optim_wrapper(cfg: Config) -> None:
    """Give the run an optimizer wrapper with the non-finite-loss guard (:mod:`visionzoo.engine.optim`).

    mmengine's ``OptimWrapper`` (also the default when ``type`` is absent) and ``AmpOptimWrapper`` become
    ``GuardedOptimWrapper`` and ``GuardedAmpOptimWrapper``. The guard's mode is ``optim_wrapper.nonfinite_loss``
    (``'stop'`` or ``'skip'``); the earlier ``model.nonfinite_loss`` is moved there.
    """
    legacy = _pop_model_nonfinite_loss(cfg)
    wrapper = cfg.get('optim_wrapper')
    if not wrapper:
        if legacy is not None:
            raise ConfigError('model.nonfinite_loss: the non-finite-loss guard is an optimizer wrapper setting; '
                              'there is no optim_wrapper in the config')
        return
    if legacy is not None:
        if wrapper.get('nonfinite_loss', legacy) != legacy:
            raise ConfigError(f'model.nonfinite_loss={legacy!r} contradicts optim_wrapper.nonfinite_loss='
                              f'{wrapper["nonfinite_loss"]!r}; set only optim_wrapper.nonfinite_loss')
        wrapper['nonfinite_loss'] = legacy
    mode = wrapper.get('nonfinite_loss', 'stop')
    if mode not in NONFINITE_LOSS_MODES:
        raise ConfigError(f"optim_wrapper.nonfinite_loss: expected 'stop' or 'skip', got {mode!r}")
    if wrapper.get('constructor', 'DefaultOptimWrapperConstructor') != 'DefaultOptimWrapperConstructor':
        return  # a custom constructor builds its own wrappers (several optimizers, ...)
    name = wrapper.get('type', 'OptimWrapper')
    bare = name.split('.', 1)[-1] if isinstance(name, str) else None
    if bare in _GUARDED and (name == bare or name.startswith('mmengine.')):
        wrapper['type'] = _GUARDED[bare]
    elif bare not in _GUARDED_TYPES and 'nonfinite_loss' in wrapper:
        raise ConfigError(f'optim_wrapper.nonfinite_loss: optim_wrapper.type={name!r} has no non-finite-loss guard; '
                          f'use one of {sorted(_GUARDED_TYPES)} or mix NonFiniteLossGuard into it')


def finish_distributed() -> None:
    """End a distributed run in order: every rank waits for the others (rank 0 may still be writing a checkpoint),
    then the process group is destroyed before the interpreter exits. Left to interpreter teardown, a rank that
    finished first could abort in gloo's destructor ("terminate called without an active exception")."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def init_cpu_distributed(cfg: Config) -> None:
    """Start the gloo process group for ``--launcher pytorch`` on a machine without CUDA.

    mmengine's ``init_dist`` always calls ``torch.cuda.set_device``; once a process group exists the Runner
    skips it and uses ours.
    """
    import torch.distributed as dist
    if cfg.get('launcher', 'none') == 'pytorch' and not torch.cuda.is_available() and not dist.is_initialized():
        backend = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('backend', 'gloo')
        dist.init_process_group(backend=backend)


def setup_train_cfg(cfg: Config, work_dir: Optional[str], resume, amp: bool, launcher: str,
                    config_path: str) -> Config:
    """Apply the train tool's flags to ``cfg``.

    ``resume``: None (fresh run), ``'auto'`` (latest checkpoint of the work dir) or a checkpoint path.
    """
    install_checkpoint_loader()
    resolve_work_dir(cfg, work_dir, config_path)
    cfg.launcher = launcher
    if resume is None:
        check_work_dir(cfg.work_dir, resume=False)
        cfg.resume = False
    elif resume == 'auto':
        # resolved here, relative to this work dir (mmengine would follow the marker's absolute path)
        cfg.resume, cfg.load_from = True, resolve_last_checkpoint(cfg.work_dir)
    else:
        # a missing file fails here; its contents are checked once, by the loader, when the Runner resumes
        if not os.path.isfile(resume):
            raise CheckpointError(f'--resume: checkpoint file not found: {resume}')
        cfg.resume, cfg.load_from = True, resume
    use_visionzoo_runner_parts(cfg)
    use_checkpoint_checks(cfg)
    if amp:
        optim_wrapper = cfg.setdefault('optim_wrapper', {})
        optim_wrapper.update(amp_optim_wrapper_type(torch.cuda.is_available()))
    adapt_to_device(cfg)
    use_guarded_optim_wrapper(cfg)
    return cfg


def _fill_model_name(node, model_name: str) -> None:
    if isinstance(node, dict):
        if str(node.get('type', '')).split('.')[-1] == 'ModelEvalTransform' and node.get('model_name') is None:
            node['model_name'] = model_name
        for value in node.values():
            _fill_model_name(value, model_name)
    elif isinstance(node, (list, tuple)):
        for value in node:
            _fill_model_name(value, model_name)


def use_model_eval_transform(cfg: Config) -> None:
    """``ModelEvalTransform`` entries of the val/test data without a ``model_name`` get ``model.backbone``'s, so the
    preprocessing follows ``--cfg-options model.backbone.model_name=...``."""
    backbone = (cfg.get('model') or {}).get('backbone')
    model_name = backbone.get('model_name') if isinstance(backbone, dict) else backbone
    if isinstance(model_name, str):
        for key in ('val_dataloader', 'test_dataloader'):
            _fill_model_name(cfg.get(key), model_name)


def setup_test_cfg(cfg: Config, work_dir: Optional[str], launcher: str, config_path: str,
                   out: Optional[str] = None, show_dir: Optional[str] = None,
                   show_max: Optional[int] = None) -> Config:
    """Apply the test tool's flags to ``cfg``: no training parts, weights loaded by the tool (strictly).

    ``out``: also dump every prediction to this JSON file (must not exist), or for segmentation (an ``IoUMetric``
    evaluator) the label maps as PNGs into this folder (new or empty); ``show_dir``: draw predictions there
    (must be empty or absent), at most ``show_max`` images.
    """
    from ..evaluation.dump import check_out_dir, check_out_file

    install_checkpoint_loader()
    resolve_work_dir(cfg, work_dir, config_path)
    cfg.launcher = launcher
    cfg.load_from, cfg.resume = None, False  # weights are loaded strictly by the tool
    _pop_model_nonfinite_loss(cfg)  # a training setting
    for key in ('train_dataloader', 'train_cfg', 'optim_wrapper', 'param_scheduler'):
        cfg.pop(key, None)
    if not cfg.get('test_dataloader'):
        raise ConfigError(f'{config_path}: no test_dataloader in the config')
    if out:
        evaluator = cfg.test_evaluator
        evaluator = list(evaluator) if isinstance(evaluator, (list, tuple)) else [evaluator]
        if any(isinstance(e, dict) and str(e.get('type', '')).split('.')[-1] == 'IoUMetric' for e in evaluator):
            check_out_dir(out)  # segmentation: label PNGs, as mmseg's format_only
            cfg.test_evaluator = evaluator + [dict(type='DumpSegMaps', out_dir=out)]
        else:
            check_out_file(out)
            cfg.test_evaluator = evaluator + [dict(type='DumpPredictions', out_file=out)]
    for hook in cfg.get('custom_hooks') or []:  # the tool prints the test table itself
        if isinstance(hook, dict) and str(hook.get('type', '')).split('.')[-1] == 'MetricTableHook':
            hook['test'] = False
    if show_dir:
        if os.path.isdir(show_dir) and os.listdir(show_dir):
            raise ConfigError(f'--show-dir: {show_dir} is not empty; choose a new or empty folder')
        cfg.custom_hooks = list(cfg.get('custom_hooks') or []) + [
            dict(type='PredictionDrawHook', show_dir=show_dir, max_images=show_max)]
    use_model_eval_transform(cfg)
    adapt_to_device(cfg)
    use_visionzoo_runner_parts(cfg)
    return cfg
