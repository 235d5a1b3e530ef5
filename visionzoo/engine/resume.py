"""Checkpoints a run can rely on: atomic writes, a work dir that can be copied or moved, strict key checks.

- :class:`CheckpointHook` (mmengine's hook under its own name in the ``visionzoo`` scope, so every config gets it)
  writes each checkpoint to ``<name>.tmp`` and renames it into place, writes ``last_checkpoint`` the same way and
  with a path relative to the work dir, and deletes checkpoints beyond ``max_keep_ckpts`` only after the new one
  is complete. A process killed while saving leaves the previous checkpoint and marker intact.
- :func:`resolve_last_checkpoint` reads ``last_checkpoint`` relative to the work dir it sits in (older absolute
  markers by file name when the file sits next to the marker), so a copied work dir resumes from its own files.
- :class:`CheckpointKeysHook` compares a checkpoint's weights with the model before anything is restored:
  ``load_from`` and ``--resume`` of another model's checkpoint stop with one line naming the keys.
"""
import os
import re
from typing import Optional, Sequence

import torch
from mmengine.dist import is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook as _MMCheckpointHook
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper

from ..registry import HOOKS
from ..utils.errors import CheckpointError, ConfigError
from .checkpoint import model_state, state_dict_mismatch

__all__ = ['CheckpointHook', 'CheckpointKeysHook', 'resolve_last_checkpoint', 'write_atomic', 'MARKER']

MARKER = 'last_checkpoint'


def write_atomic(path: str, data: bytes) -> None:
    """Write ``data`` to ``path`` through ``path + '.tmp'``, fsync and rename: readers see the old or the new file."""
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def resolve_last_checkpoint(work_dir: str) -> str:
    """The checkpoint ``work_dir/last_checkpoint`` names, for ``--resume`` without a path.

    A relative name is taken relative to ``work_dir``. An absolute one (written by mmengine's own hook) is read by
    its file name when that file sits next to the marker (a copied or moved work dir resumes from its own copy),
    otherwise as written (checkpoints saved to an ``out_dir`` elsewhere).

    Raises:
        CheckpointError: no marker, or the checkpoint it names does not exist.
    """
    marker = os.path.join(work_dir, MARKER)
    if not os.path.isfile(marker):
        found = sorted(n for n in os.listdir(work_dir) if n.endswith('.pth')) if os.path.isdir(work_dir) else []
        if found:
            raise CheckpointError(f'--resume: work dir {work_dir} holds {", ".join(found[:4])} but no {MARKER} file; '
                                  f'pass the checkpoint to resume from: --resume PATH')
        raise CheckpointError(f'--resume: no checkpoint to resume from in work dir {work_dir}')
    with open(marker, encoding='utf-8') as f:
        name = f.read().strip()
    if not name:
        raise CheckpointError(f'{marker}: empty; pass the checkpoint to resume from: --resume PATH')
    if not os.path.isabs(name):
        path = os.path.join(work_dir, name)
    else:
        beside = os.path.join(work_dir, os.path.basename(name))
        path = beside if os.path.isfile(beside) else name
    if not os.path.isfile(path):
        raise CheckpointError(f'{marker}: names {name}, which does not exist (looked for {path}); pass the '
                              f'checkpoint to resume from: --resume PATH')
    return path


@HOOKS.register_module()
class CheckpointHook(_MMCheckpointHook):
    """mmengine's ``CheckpointHook`` with crash-safe local writes and a relocatable ``last_checkpoint``.

    Same arguments and files as mmengine's. For a local ``out_dir``: the checkpoint is written to ``<name>.tmp``
    and renamed when complete; ``last_checkpoint`` is rewritten atomically and holds the name relative to the
    work dir; old checkpoints (``max_keep_ckpts``) are removed after the new one is in place, not before. A best
    checkpoint remembered from a run in another directory (a copied work dir) is looked for in this one, so the
    original's files are never deleted. Other storage backends keep mmengine's behaviour.
    """

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not self._local():
            return
        if getattr(self, 'best_ckpt_path', None):
            self.best_ckpt_path = self._here(self.best_ckpt_path)
        for key, path in list(getattr(self, 'best_ckpt_path_dict', {}).items()):
            if path:
                self.best_ckpt_path_dict[key] = self._here(path)

    def _local(self) -> bool:
        return isinstance(getattr(self, 'file_backend', None), LocalBackend)

    def _here(self, path: str) -> str:
        return os.path.join(self.out_dir, os.path.basename(path))

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        if not self._local():
            return super()._save_checkpoint_with_step(runner, step, meta)
        outdated = None
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            if len(self.keep_ckpt_ids) == self.max_keep_ckpts:
                outdated = self.keep_ckpt_ids.popleft()
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        filename = self.filename_tmpl.format(step)
        self.last_ckpt = os.path.join(self.out_dir, filename)
        runner.message_hub.update_info('last_ckpt', self.last_ckpt)
        runner.save_checkpoint(self.out_dir, filename + '.tmp', self.file_client_args,
                               save_optimizer=self.save_optimizer, save_param_scheduler=self.save_param_scheduler,
                               meta=meta, by_epoch=self.by_epoch, backend_args=self.backend_args, **self.args)
        if not is_main_process():
            return
        tmp = self.last_ckpt + '.tmp'
        with open(tmp, 'rb+') as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.last_ckpt)
        work_dir = os.path.abspath(runner.work_dir)
        target = os.path.abspath(self.last_ckpt)
        inside = os.path.commonpath([work_dir, target]) == work_dir
        write_atomic(os.path.join(runner.work_dir, MARKER),
                     (os.path.relpath(target, work_dir) if inside else target).encode('utf-8'))
        if outdated is not None and outdated != step:
            old = os.path.join(self.out_dir, self.filename_tmpl.format(outdated))
            if os.path.isfile(old):
                os.remove(old)


def _weights_of(checkpoint: dict) -> Optional[dict]:
    """The state dict inside a loaded checkpoint (``state_dict``/``model``/``module`` entry, or the dict itself)."""
    for key in ('state_dict', 'model', 'module'):
        if isinstance(checkpoint.get(key), dict):
            return checkpoint[key]
    if checkpoint and all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        return checkpoint
    return None


def _preview(keys: Sequence[str], limit: int = 4) -> str:
    return ', '.join(keys[:limit]) + (f', ... ({len(keys)} in all)' if len(keys) > limit else '')


@HOOKS.register_module()
class CheckpointKeysHook(Hook):
    """Checks a checkpoint against the model before the Runner restores anything from it.

    ``load_from`` (fine-tuning) and ``--resume`` must hold exactly the model's weights with the model's shapes, after
    the model's ``convert_checkpoint(state)`` where it has one (official layouts -> the model's keys; the Runner then
    loads the converted weights).
    For ``load_from`` only, ``ignore_keys`` (the config's ``load_from_ignore_keys``: regular expressions matched at
    the start of a key, e.g. ``['head\\.fc\\.']`` when ``num_classes`` differs) names weights that may be missing,
    unexpected or of another shape; those keep the model's own initialisation. Anything else stops the run with one
    :class:`CheckpointError` naming the file and the keys. A resumed checkpoint already at the end of the schedule
    is reported as such. The tools add this hook to every training run.
    """

    priority = 'VERY_HIGH'

    def __init__(self, ignore_keys: Optional[Sequence[str]] = None):
        if ignore_keys is None:
            ignore_keys = []
        if isinstance(ignore_keys, str) or not all(isinstance(k, str) for k in ignore_keys):
            raise ConfigError(f'load_from_ignore_keys: expected a list of regular expressions, got {ignore_keys!r}')
        try:
            self.ignore = [re.compile(k) for k in ignore_keys]
        except re.error as e:
            raise ConfigError(f'load_from_ignore_keys: bad regular expression ({e})') from None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        resume = bool(getattr(runner, '_resume', False))
        what = f'--resume {runner._load_from}' if resume else f'load_from={runner._load_from}'
        state = _weights_of(checkpoint) if isinstance(checkpoint, dict) else None
        if state is None:
            raise CheckpointError(f'{what}: no weights found (expected a state_dict, or a dict with a "state_dict" or '
                                  f'"model" entry)')
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        # an official layout (e.g. an mmseg 0.x checkpoint): compare and load the model's keys
        original, state = state, model_state(model, state)
        converted = state is not original
        own = model.state_dict()
        allowed = (lambda k: False) if resume else (lambda k: any(p.match(k) for p in self.ignore))
        missing, unexpected, wrong_shown = state_dict_mismatch(own, state, allowed)
        if missing or unexpected or wrong_shown:
            parts = [f'{len(keys)} {name} ({_preview(keys)})'
                     for name, keys in (('missing', missing), ('unexpected', unexpected),
                                        ('of another shape', wrong_shown)) if keys]
            hint = ('it is not a checkpoint of this config\'s model' if resume else
                    'list keys the model may initialise itself in load_from_ignore_keys (regular expressions)')
            raise CheckpointError(f'{what}: weights do not fit the model built from the config: '
                                  f'{"; ".join(parts)}; {hint}')
        # allowed differences: keep the model's own initialisation for them
        kept = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
        if len(kept) != len(state) or 'state_dict' not in checkpoint or converted:
            checkpoint['state_dict'] = kept
        if resume:
            if not isinstance(checkpoint.get('meta'), dict) or 'epoch' not in checkpoint['meta']:
                raise CheckpointError(f'{what}: not a training checkpoint (it holds weights but no training state); '
                                      f'to start a run from its weights use --cfg-options load_from=PATH')
            self._report_finished(runner, checkpoint, what)

    @staticmethod
    def _report_finished(runner, checkpoint: dict, what: str) -> None:
        meta = checkpoint.get('meta') or {}
        loop = runner.train_loop
        for unit, key in (('epoch', 'max_epochs'), ('iter', 'max_iters')):
            done, end = meta.get(unit), getattr(loop, key, None)
            if unit == 'iter' and hasattr(loop, 'max_epochs'):
                continue  # an epoch-based run ends by epochs
            if isinstance(done, int) and isinstance(end, int) and done >= end:
                print_log(f'{what}: the checkpoint is at {unit} {done} and train_cfg.{key}={end}: nothing left to '
                          f'train; raise train_cfg.{key} to continue training', logger='current', level=30)
                return
