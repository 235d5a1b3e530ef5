"""Importing visionzoo changes nothing twice and nothing outside visionzoo: reloading the family modules keeps
timm's checkpoint filters single-wrapped, and mmengine's checkpoint loader is replaced only when the engine asks."""
import importlib
import json
import subprocess
import sys

import timm
import torch
from conftest import ROOT, official_layout, synthetic_state_dict
from timm.models import efficientvit_msra as timm_evit
from timm.models import shvit as timm_shvit

import visionzoo
from visionzoo.backbones import efficientvit_msra, shvit


def _official_checkpoint(tmp_path, name):
    layout = official_layout(name)
    state_dict = synthetic_state_dict(layout['keys'])
    path = tmp_path / f'{name}.pth'
    torch.save({'model': state_dict}, path)
    return str(path), state_dict


def test_reloading_family_modules_keeps_official_checkpoints_loading(tmp_path):
    importlib.reload(visionzoo)
    for _ in range(2):
        importlib.reload(efficientvit_msra)
        importlib.reload(shvit)
    for timm_module, ours in ((timm_evit, efficientvit_msra), (timm_shvit, shvit)):
        installed = timm_module.checkpoint_filter_fn
        assert installed is ours.checkpoint_filter_fn
        # one wrapper around timm's own filter, not a wrapper around an earlier wrapper (which called itself)
        assert installed.wraps_timm_filter.__module__ == timm_module.__name__
    for name in ('efficientvit_m0', 'shvit_s1'):
        path, official = _official_checkpoint(tmp_path, name)
        model = timm.create_model(name, pretrained=True, pretrained_cfg_overlay=dict(file=path))
        loaded = sorted(round(v.double().sum().item(), 6) for v in model.state_dict().values() if v.is_floating_point())
        assert loaded == sorted(round(v.double().sum().item(), 6) for v in official.values()), name


_PROBE = r'''
import json, sys
from mmengine.runner.checkpoint import CheckpointLoader
before = CheckpointLoader._schemes.get('')
import visionzoo, visionzoo.engine
after_import = CheckpointLoader._schemes.get('')
from visionzoo.engine.runner_utils import setup_train_cfg
from mmengine.config import Config
setup_train_cfg(Config(dict(model=dict())), sys.argv[1], None, False, 'none', 'x.py')
print(json.dumps(dict(import_replaced=after_import is not before,
                      setup_installed=CheckpointLoader._schemes[''].__module__)))
'''


def test_import_leaves_mmengine_checkpoint_loader_alone_until_setup(tmp_path):
    out = subprocess.run([sys.executable, '-c', _PROBE, str(tmp_path / 'work')], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == dict(import_replaced=False, setup_installed='visionzoo.engine.checkpoint')
