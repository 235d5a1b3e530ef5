"""ADE20K segmentation configs (configs/upernet, configs/sem_fpn): each loads, passes the config check and builds;
where an official layout was recorded (tests/data/official_layouts/seg_*.json, from the official code and configs)
our model has the official number of parameters; the papers' schedules; one training step of a cheap one."""
import glob
import os
import re

import pytest
import torch
from mmengine.config import Config

import visionzoo  # noqa: F401
from conftest import ROOT, official_layout, synthetic_state_dict
from visionzoo.engine.config import check_config
from visionzoo.models.seg_checkpoint import convert_segmentor_state_dict
from visionzoo.registry import MODELS

CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', 'upernet', '*.py'))
                 + glob.glob(os.path.join(ROOT, 'configs', 'sem_fpn', '*_ade20k.py')))
OFFICIAL = {  # config -> recorded official segmentor layout
    'upernet_van-b2_512x512_160k_ade20k.py': 'seg_van_b2_upernet',
    'upernet_biformer-s_512x512_160k_ade20k.py': 'seg_biformer_s_upernet',
    'fpn_van-b2_512x512_40k_ade20k.py': 'seg_van_b2_sfpn',
    'fpn_biformer-s_512x512_80k_ade20k.py': 'seg_biformer_s_sfpn',
    'upernet_vim-tiny_512x512_60k_ade20k.py': 'seg_vim_tiny_upernet',
}
UNUSED = ('backbone.norm_f.',)  # stored by the official Vim seg code, never used (last_layer_process='none')
BUFFERS = ('running_mean', 'running_var', 'num_batches_tracked')


def _build(cfg):
    with torch.device('meta'):
        return MODELS.build(cfg.model)


def test_there_are_configs_for_every_family():
    names = ' '.join(os.path.basename(p) for p in CONFIGS)
    for family in ('van-b2', 'biformer-s', 'vim-tiny', 'mambaout-tiny', 'slab-swin-tiny', 'efficientvit-m4',
                   'shvit-s4'):
        assert family in names, family


@pytest.mark.parametrize('path', CONFIGS, ids=os.path.basename)
def test_config_builds_with_the_official_size_and_schedule(path):
    cfg = Config.fromfile(path)
    check_config(cfg, path)
    with open(path) as f:
        header = f.read().split('\n_base_ = ')[0]
    assert re.search(r'Reported|No reported number', header), header  # names the source's number (or its absence)
    model = _build(cfg)
    assert model.num_classes == 150 and cfg.model.data_preprocessor.seg_pad_val == 255
    iters = int(re.search(r'_(\d+)k_ade20k', path).group(1)) * 1000
    assert cfg.train_cfg.max_iters == iters
    assert max(s.get('end', 0) for s in cfg.param_scheduler) == iters
    name = os.path.basename(path)
    if name in OFFICIAL:
        layout = official_layout(OFFICIAL[name])
        official = sum(torch.Size(shape).numel() for key, shape in layout['keys']
                       if not key.endswith(BUFFERS) and not key.startswith(UNUSED))
        ours = sum(p.numel() for p in model.parameters())
        assert ours == official, (ours, official)


@pytest.mark.parametrize('name', sorted(OFFICIAL))
def test_official_checkpoint_layout_loads_strictly_into_the_config(name):
    """The recorded official segmentor layout (synthetic values) -> our checkpoint conversion -> strict load into
    the model our config builds; every official tensor lands somewhere (nothing dropped but unused weights)."""
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'upernet' if name.startswith('upernet') else 'sem_fpn', name))
    model = _build(cfg)
    state = synthetic_state_dict(official_layout(OFFICIAL[name])['keys'])
    converted = convert_segmentor_state_dict(model, state)
    own = model.state_dict()
    filled = {k: v for k, v in own.items() if k.endswith('num_batches_tracked')}  # left out by synthetic_state_dict
    model.load_state_dict({**filled, **converted}, strict=True, assign=True)
    kept = {id(v) for v in converted.values()}
    lost = [k for k, v in state.items() if id(v) not in kept and not k.startswith(UNUSED)]
    assert not lost, lost


def test_one_training_step_of_a_cheap_config():
    cfg = Config.fromfile(os.path.join(ROOT, 'configs', 'sem_fpn', 'fpn_efficientvit-m4_512x512_40k_ade20k.py'))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    images = [torch.randint(0, 255, (3, 64, 64), dtype=torch.uint8) for _ in range(2)]
    samples = [dict(img_path=f'{i}.jpg', ori_shape=(64, 64), img_shape=(64, 64), flip=False,
                    gt_sem_seg=torch.randint(0, 150, (64, 64))) for i in range(2)]
    data = model.data_preprocessor(dict(inputs=images, data_samples=samples), True)
    losses = model(**data, mode='loss')
    assert set(losses) == {'decode.loss_ce', 'decode.acc_seg'}
    assert torch.isfinite(losses['decode.loss_ce'])
    losses['decode.loss_ce'].backward()


def test_norm_options_pass_the_check_when_another_library_registered_the_name():
    """mmcv (imported by the mmpretrain reference tests) registers SyncBN/BN/GN in mmengine's root MODELS; norms are
    built by visionzoo's factory, which takes requires_grad: the config check must not read them as that class."""
    from mmengine.registry import MODELS as ROOT_MODELS
    path = os.path.join(ROOT, 'configs', 'sem_fpn', 'fpn_van-b2_512x512_40k_ade20k.py')
    had = 'SyncBN' in ROOT_MODELS.module_dict
    if not had:
        ROOT_MODELS.register_module(name='SyncBN', module=torch.nn.SyncBatchNorm)
    try:
        check_config(Config.fromfile(path), path)
    finally:
        if not had:
            ROOT_MODELS.module_dict.pop('SyncBN')
