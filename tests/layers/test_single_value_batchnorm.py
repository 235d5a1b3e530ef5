"""A batch of one image whose deepest map is 1x1 trains: BatchNorm with one value per channel uses running
statistics for that call (issue 19: it crashed with a raw BatchNorm traceback in detectors)."""
import pytest
import torch
import torch.nn as nn
from mmengine.config import Config

import visionzoo  # noqa: F401
from visionzoo.layers.norm_act import single_value_batchnorm_uses_running_stats
from visionzoo.registry import MODELS


def test_one_value_per_channel_uses_running_statistics_other_batches_unchanged():
    torch.manual_seed(0)
    guarded = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    guarded[1].running_mean.uniform_(-1, 1)
    guarded[1].running_var.uniform_(0.5, 2)
    plain = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4))
    plain.load_state_dict(guarded.state_dict())
    single_value_batchnorm_uses_running_stats(guarded)
    single_value_batchnorm_uses_running_stats(guarded)  # idempotent: one pair of hooks
    assert len(guarded[1]._forward_pre_hooks) == 1
    guarded.train()
    plain.train()
    one = torch.randn(1, 3, 1, 1)
    with pytest.raises(ValueError, match='Expected more than 1 value per channel'):
        plain(one)
    stats = guarded[1].running_mean.clone()
    with pytest.warns(UserWarning, match=r'^1 .*one value per channel in training'):
        out = guarded(one)
    assert guarded[1].training  # back in training mode after the call
    assert torch.equal(guarded[1].running_mean, stats)  # not updated by one value
    plain.eval()
    torch.testing.assert_close(out, plain(one))
    plain.train()
    two = torch.randn(2, 3, 1, 1)
    torch.testing.assert_close(guarded(two), plain(two))  # batch statistics as usual
    torch.testing.assert_close(guarded[1].running_mean, plain[1].running_mean)


def test_detector_trains_on_one_small_image():
    cfg = Config.fromfile('configs/fcos/fcos_efficientvit-m0_fpn_shapes-demo.py')
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).train()
    img = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)
    sample = dict(img_id=0, img_path='x.png', ori_shape=(32, 32), img_shape=(32, 32), scale_factor=(1., 1.),
                  flip=False, gt_bboxes=torch.tensor([[2., 2., 20., 18.]]), gt_labels=torch.tensor([1]))
    data = model.data_preprocessor(dict(inputs=[img], data_samples=[sample]), True)
    with pytest.warns(UserWarning, match=r'backbone\..*one value per channel'):
        losses = model(**data, mode='loss')
    total = sum(losses.values())
    assert torch.isfinite(total)
    total.backward()
