"""What the tools do around mmengine's Runner: work-dir safety, resume, device fixes, readable errors."""
import glob
import os
import re
from typing import Optional

import torch
from mmengine.config import Config

from ..utils.errors import CheckpointError, ConfigError
from .cli import resolve_work_dir
from .optim import amp_optim_wrapper_type

__all__ = ['existing_checkpoints', 'check_work_dir', 'setup_train_cfg', 'adapt_to_device', 'init_cpu_distributed',
           'use_visionzoo_runner_parts', 'format_error']


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


def adapt_to_device(cfg: Config) -> None:
    """Settings that must differ without CUDA: gloo for distributed runs, CPU DDP without device ids."""
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
        if wrapper_type == 'AmpOptimWrapper':
            raise ConfigError("optim_wrapper.type='AmpOptimWrapper' needs a CUDA device; on CPU use "
                              "type='CPUAmpOptimWrapper' (bf16 autocast), or pass --amp to choose by device")


def use_visionzoo_runner_parts(cfg: Config) -> None:
    """Point the two places where mmengine's Runner bypasses the ``visionzoo`` scope at our registry entries.

    - ``collate_fn=dict(type=NAME)``: the Runner looks NAME up in mmengine's root ``FUNCTIONS`` only, so a collate
      function registered by visionzoo (``det_collate``) gets its scope prefix.
    - ``train_cfg=dict(by_epoch=True, ...)`` without ``type``: the Runner instantiates mmengine's epoch loop
      directly; it becomes ``type='EpochBasedTrainLoop'``, i.e. ours (it resumes inside an epoch).
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
    resolve_work_dir(cfg, work_dir, config_path)
    cfg.launcher = launcher
    if resume is None:
        check_work_dir(cfg.work_dir, resume=False)
        cfg.resume = False
    elif resume == 'auto':
        if not existing_checkpoints(cfg.work_dir):
            raise CheckpointError(f'--resume: no checkpoint to resume from in work dir {cfg.work_dir}')
        cfg.resume, cfg.load_from = True, None
    else:
        # a missing file fails here; its contents are checked once, by the loader, when the Runner resumes
        if not os.path.isfile(resume):
            raise CheckpointError(f'--resume: checkpoint file not found: {resume}')
        cfg.resume, cfg.load_from = True, resume
    use_visionzoo_runner_parts(cfg)
    if amp:
        optim_wrapper = cfg.setdefault('optim_wrapper', {})
        optim_wrapper.update(amp_optim_wrapper_type(torch.cuda.is_available()))
    adapt_to_device(cfg)
    return cfg


def format_error(e: BaseException) -> str:
    """One line for a user-input error, also when it was re-raised from a DataLoader worker."""
    msg = str(e)
    if 'Original Traceback' in msg:
        last = [ln for ln in msg.strip().splitlines() if ln.strip()][-1]
        msg = re.sub(r'^[\w.]*(Error|Exception): ', '', last.strip())
    return msg
