"""TimmBackbone: any timm model as a dense backbone from config; Vim + SimpleFeaturePyramid as in ViTDet."""
import re

import pytest
import torch

import visionzoo  # noqa: F401
from visionzoo.registry import MODELS
from visionzoo.utils.errors import ArgumentError, CheckpointError


def test_vim_dense_backbone_with_simple_feature_pyramid():
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='vim_tiny', class_token=False, depth=4,
                                 out_indices=(1, 3), img_size=64))
    assert backbone.out_channels == [192, 192] and backbone.strides == [16, 16]
    assert backbone.body.model.cls_token is None and len(backbone.body.model.layers) == 4
    neck = MODELS.build(dict(type='SimpleFeaturePyramid', in_channels=192, out_channels=32, num_outs=5))
    img = torch.randn(2, 3, 96, 64)
    feats = backbone(img)
    assert [f.shape for f in feats] == [(2, 192, 6, 4)] * 2
    outs = neck(feats[-1:])
    assert [tuple(o.shape[-2:]) for o in outs] == [(24, 16), (12, 8), (6, 4), (3, 2), (2, 1)]
    assert all(o.shape[1] == 32 for o in outs)
    sum(o.sum() for o in outs).backward()
    assert backbone.body.model.patch_embed.proj.weight.grad is not None


def test_features_are_the_residual_stream_of_the_chosen_blocks():
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='vim_tiny', class_token=False, depth=3,
                                 out_indices=(2,), img_size=32))
    model = backbone.body.model
    img = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        hidden, _ = model._embed(img)
        residual = None
        for layer in model.layers:
            hidden, residual = layer(hidden, residual)
        expected = (residual + hidden).transpose(1, 2).reshape(1, 192, 2, 3)
        torch.testing.assert_close(backbone(img)[0], expected)


def test_hierarchical_timm_model_and_norm_eval():
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='resnet10t', out_indices=(1, 2, 3, 4),
                                 norm_eval=True))
    assert backbone.strides == [4, 8, 16, 32]
    backbone.train()
    bns = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns)
    assert backbone.body.training
    feats = backbone(torch.randn(1, 3, 64, 64))
    assert [f.shape[1] for f in feats] == backbone.out_channels


def test_with_cp_keeps_outputs():
    torch.manual_seed(0)
    plain = MODELS.build(dict(type='TimmBackbone', model_name='vim_tiny', depth=2, out_indices=(1,), img_size=32))
    ckpt = MODELS.build(dict(type='TimmBackbone', model_name='vim_tiny', depth=2, out_indices=(1,), img_size=32,
                             with_cp=True))
    ckpt.load_state_dict(plain.state_dict())
    img = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(ckpt(img)[0], plain(img)[0])


def test_bad_backbone_configs(tmp_path):
    with pytest.raises(ArgumentError, match=r"^TimmBackbone\(model_name='vim_tinny'\): unknown timm model; close "
                       r"matches: .*vim_tiny"):
        MODELS.build(dict(type='TimmBackbone', model_name='vim_tinny'))
    with pytest.raises(ArgumentError, match=r"^TimmBackbone\(out_norm='GN'\): expected None or one of \['LN'\]"):
        MODELS.build(dict(type='TimmBackbone', model_name='resnet10t', out_norm='GN'))
    with pytest.raises(ArgumentError, match=r'^TimmBackbone\(frozen_stages=6\): expected an int from -1 to 5'):
        MODELS.build(dict(type='TimmBackbone', model_name='resnet10t', frozen_stages=6))
    with pytest.raises(ArgumentError, match=r"^ImageClassifier\(backbone\.model_name='vim_tinny'\): unknown timm "
                       r"model"):
        MODELS.build(dict(type='ImageClassifier', backbone='vim_tinny', head=dict(type='LinearClsHead',
                                                                                  num_classes=2)))
    with pytest.raises(CheckpointError, match=r'^TimmBackbone\(pretrained=\.\.\.\): checkpoint file not found: '
                       r'.*none\.pth'):
        MODELS.build(dict(type='TimmBackbone', model_name='vim_tiny', pretrained=str(tmp_path / 'none.pth')))
    wrong = tmp_path / 'wrong.pth'
    torch.save({'model': {'head.weight': torch.zeros(3, 3)}}, wrong)
    with pytest.raises(CheckpointError, match=r'wrong\.pth does not match vim_tiny: missing'):
        MODELS.build(dict(type='TimmBackbone', model_name='vim_tiny', pretrained=str(wrong)))


def test_channels_last_timm_features_come_back_nchw():
    """timm's MambaOut yields NHWC feature maps; the backbone returns NCHW like every other."""
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='mambaout_femto'))
    assert backbone.body.output_fmt == 'NHWC'
    img = torch.randn(1, 3, 64, 64)
    feats = backbone(img)
    assert [tuple(f.shape) for f in feats] == [(1, c, 64 // s, 64 // s)
                                               for c, s in zip(backbone.out_channels, backbone.strides)]
    raw = backbone.body(img)
    torch.testing.assert_close(feats[0], raw[0].permute(0, 3, 1, 2))


def test_out_norm_spellings():
    """'LN' (eps 1e-6) and dict(type='LN', eps=...) give one channel LayerNorm per output under out_norms.{i}."""
    from timm.layers import LayerNorm2d
    for out_norm, eps in (('LN', 1e-6), (dict(type='LN', eps=1e-5), 1e-5)):
        backbone = MODELS.build(dict(type='TimmBackbone', model_name='resnet10t', out_indices=(2, 3),
                                     out_norm=out_norm))
        assert [type(m) for m in backbone.out_norms] == [LayerNorm2d] * 2
        assert [m.eps for m in backbone.out_norms] == [eps] * 2
        assert [m.weight.shape[0] for m in backbone.out_norms] == backbone.out_channels
        assert [k for k in backbone.state_dict() if k.startswith('out_norms.')] == [
            'out_norms.0.weight', 'out_norms.0.bias', 'out_norms.1.weight', 'out_norms.1.bias']


@pytest.mark.parametrize('shape', [(0, 3, 32, 32), (3, 32, 32), (1, 1, 32, 32), (1, 3, 1, 32, 32)])
def test_vim_rejects_empty_batch_and_non_image_input(shape):
    import timm
    classifier = timm.create_model('vim_tiny', depth=1, img_size=32).eval()
    backbone = MODELS.build(dict(type='TimmBackbone', model_name='vim_tiny', depth=1, out_indices=(0,),
                                 img_size=32)).eval()
    pattern = (rf'^VisionMamba\(x=tensor of shape {re.escape(str(shape))}\): expected images of shape '
               r'\(B, 3, H, W\) with B >= 1$')
    for forward in (classifier, classifier.forward_intermediates, backbone):
        with pytest.raises(ArgumentError, match=pattern):
            forward(torch.randn(*shape))
    assert backbone(torch.randn(1, 3, 32, 32))[0].shape == (1, 192, 2, 2)
