"""Whole-classifier checkpoints in the families' layouts load into ImageClassifier (tools/test.py CONFIG CKPT, load_from):
timm's full model and an official layout (recorded names and shapes, synthetic values), with the same logits as timm's
own model loaded from the same file."""
import pytest
import timm
import torch

import visionzoo  # noqa: F401
from conftest import official_layout, synthetic_state_dict
from visionzoo.engine.checkpoint import load_model_weights
from visionzoo.registry import MODELS
from visionzoo.utils.errors import CheckpointError


def _classifier(name):
    return MODELS.build(dict(type='ImageClassifier', backbone=dict(model_name=name),
                             head=dict(type='LinearClsHead', num_classes=1000))).eval()


def test_timm_full_model_checkpoint():
    torch.manual_seed(0)
    ref = timm.create_model('resnet10t').eval()
    model = _classifier('resnet10t')
    load_model_weights(model, ref.state_dict(), 'resnet10t.pth')
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    # our own checkpoints pass unchanged
    assert model.convert_checkpoint(model.state_dict()).keys() == model.state_dict().keys()


def test_official_van_layout(tmp_path):
    state = synthetic_state_dict(official_layout('van_b0'))
    state.update({k: torch.tensor(0) for k, _ in official_layout('van_b0') if k.endswith('num_batches_tracked')})
    path = str(tmp_path / 'van_b0_official.pth')
    torch.save(state, path)
    ref = timm.create_model('van_b0', pretrained=True, pretrained_cfg_overlay=dict(file=path)).eval()
    model = _classifier('van_b0')
    load_model_weights(model, dict(state), path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x))
    del state['head.weight']
    with pytest.raises(CheckpointError, match=r'missing .*head\.fc\.weight'):
        load_model_weights(_classifier('van_b0'), state, path)
