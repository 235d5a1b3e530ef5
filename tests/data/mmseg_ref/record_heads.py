"""Record real mmseg 1.2.2 decode-head outputs for tests/heads/test_seg_heads.py (run once; needs mmcv/mmseg).

Recipe (reference stack outside the repo, reusing the project's torch; mmengine comes from the project venv)::

    /work/main/.venv/bin/python -m pip install --no-deps --target /tmp/mmseg-pkgs \\
        mmcv-2.1.0-cp311-cp311-linux_x86_64.whl mmsegmentation==1.2.2 ftfy regex prettytable wcwidth scipy
    PYTHONPATH=/tmp/mmseg-pkgs /work/main/.venv/bin/python tests/data/mmseg_ref/record_heads.py

writes ``tests/data/mmseg_ref/heads.pt`` (torch.save of tensors, dicts, lists and strings only), holding:

- ``inputs``: four maps (N=2, channels 8/16/24/32, sizes 16/8/4/2: a 64x64 image at strides 4..32);
- ``label``: a (2, 64, 64) uint8 label map with classes 0..4 and ignore pixels 255; ``full_label`` the same with
  every ignore pixel set to a random class (mmseg 1.2.2's ``cross_entropy`` with a ``class_weight`` raises IndexError
  on labels with ignore pixels, since it indexes ``class_weight`` with them; such values are recorded as None);
- ``cases``: for each head config (the ``cfg`` dict, mmseg arguments), the ``state_dict`` after every parameter and
  buffer was randomised with a seed (BN running statistics included), the eval-mode ``forward`` logits and the
  ``loss_by_feat`` dicts for ``label`` (``losses``) and ``full_label`` (``full_losses``);
- ``ce``: CrossEntropyLoss configs with their values on ``ce_logits`` (2, 5, 16, 16) and ``label[:, ::4, ::4]``
  (``value``) / ``full_label[:, ::4, ::4]`` (``full_value``), ignore_index 255;
- ``shapes``: key -> shape of the state dicts of full-size heads (UPerNet's UPerHead and auxiliary FCNHead), for
  the checkpoint-layout check.
"""
import os

import torch
from mmengine.structures import PixelData

from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'heads.pt')
IN_CHANNELS = [8, 16, 24, 32]
SIZES = [16, 8, 4, 2]
NUM_CLASSES = 5
CHANNELS = 8
CE = dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)

CASES = {
    'uper_syncbn': dict(type='UPerHead', in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3, 6),
                        channels=CHANNELS, dropout_ratio=0.1, num_classes=NUM_CLASSES,
                        norm_cfg=dict(type='SyncBN', requires_grad=True), align_corners=False, loss_decode=CE),
    'uper_gn_multi_loss': dict(
        type='UPerHead', in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3], pool_scales=(1, 2, 3), channels=CHANNELS,
        num_classes=NUM_CLASSES, norm_cfg=dict(type='GN', num_groups=4, requires_grad=True), align_corners=True,
        loss_decode=[dict(CE, avg_non_ignore=True),
                     dict(CE, loss_weight=0.4, class_weight=[0.5, 1.0, 2.0, 1.5, 0.8], loss_name='loss_ce_w'),
                     dict(CE, loss_weight=0.25)]),
    'fpn_bn': dict(type='FPNHead', in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3], feature_strides=[4, 8, 16, 32],
                   channels=CHANNELS, dropout_ratio=0.1, num_classes=NUM_CLASSES, norm_cfg=dict(type='BN'),
                   align_corners=False, loss_decode=dict(CE, avg_non_ignore=True)),
    'fcn_aux_bn': dict(type='FCNHead', in_channels=24, in_index=2, channels=CHANNELS, num_convs=2, concat_input=True,
                       dilation=2, dropout_ratio=0.1, num_classes=NUM_CLASSES,
                       norm_cfg=dict(type='SyncBN', requires_grad=True), align_corners=False,
                       loss_decode=dict(CE, loss_weight=0.4)),
    'fcn_concat_nonorm': dict(type='FCNHead', in_channels=IN_CHANNELS, in_index=[0, 1, 2, 3],
                              input_transform='resize_concat', channels=CHANNELS, num_convs=1, kernel_size=1,
                              concat_input=False, dropout_ratio=0.0, num_classes=NUM_CLASSES, norm_cfg=None,
                              act_cfg=dict(type='ReLU'), align_corners=True,
                              loss_decode=dict(CE, class_weight=[0.5, 1.0, 2.0, 1.5, 0.8], avg_non_ignore=True)),
}

CE_CASES = [
    dict(CE),
    dict(CE, avg_non_ignore=True),
    dict(CE, class_weight=[0.5, 1.0, 2.0, 1.5, 0.8]),
    dict(CE, class_weight=[0.5, 1.0, 2.0, 1.5, 0.8], avg_non_ignore=True, loss_weight=0.4),
    dict(CE, reduction='sum', loss_weight=0.5),
    dict(CE, reduction='none'),
]

FULL_SIZE = {  # upernet_swin / upernet_convnext (mmseg configs/_base_/models/upernet_*.py) decode + auxiliary head
    'uper_full': dict(type='UPerHead', in_channels=[96, 192, 384, 768], in_index=[0, 1, 2, 3],
                      pool_scales=(1, 2, 3, 6), channels=512, dropout_ratio=0.1, num_classes=150,
                      norm_cfg=dict(type='SyncBN', requires_grad=True), align_corners=False, loss_decode=CE),
    'fcn_aux_full': dict(type='FCNHead', in_channels=384, in_index=2, channels=256, num_convs=1, concat_input=False,
                         dropout_ratio=0.1, num_classes=150, norm_cfg=dict(type='SyncBN', requires_grad=True),
                         align_corners=False, loss_decode=dict(CE, loss_weight=0.4)),
    'fpn_full': dict(type='FPNHead', in_channels=[256, 256, 256, 256], in_index=[0, 1, 2, 3],
                     feature_strides=[4, 8, 16, 32], channels=128, dropout_ratio=0.1, num_classes=150,
                     norm_cfg=dict(type='SyncBN', requires_grad=True), align_corners=False, loss_decode=CE),
}


@torch.no_grad()
def randomise(module, gen):
    """Every parameter and buffer drawn from ``gen``: conv weights ~ N(0, 1/fan_in), biases and norm shifts small,
    norm scales near 1, BN running means small and running variances in [0.5, 1.5]."""
    for name, t in module.state_dict().items():
        leaf = name.rsplit('.', 1)[-1]
        if leaf == 'num_batches_tracked':
            t.fill_(7)
        elif leaf == 'running_var':
            t.copy_(0.5 + torch.rand(t.shape, generator=gen))
        elif leaf == 'running_mean':
            t.copy_(0.3 * torch.randn(t.shape, generator=gen))
        elif t.dim() == 4:  # conv weight
            fan_in = t.shape[1] * t.shape[2] * t.shape[3]
            t.copy_(torch.randn(t.shape, generator=gen) / fan_in ** 0.5)
        elif leaf == 'weight':  # norm scale
            t.copy_(1 + 0.2 * torch.randn(t.shape, generator=gen))
        else:  # conv bias, norm shift
            t.copy_(0.2 * torch.randn(t.shape, generator=gen))


def main():
    register_all_modules()
    gen = torch.Generator().manual_seed(2024)
    inputs = [torch.randn(2, c, s, s, generator=gen) for c, s in zip(IN_CHANNELS, SIZES)]
    label = torch.randint(0, NUM_CLASSES, (2, 64, 64), generator=gen)
    label[torch.rand(label.shape, generator=gen) < 0.15] = 255
    label[0, :8, :] = 255  # a padded band, as a batch padded to a common size
    # the same labels without ignore pixels: mmseg 1.2.2's cross_entropy with a class_weight and reduction 'mean'
    # raises IndexError on ignore pixels (it indexes class_weight with the label 255), so those cases are recorded
    # on this label only
    full_label = torch.where(label == 255, torch.randint(0, NUM_CLASSES, label.shape, generator=gen), label)

    def run_losses(head, logits, lab):
        samples = [SegDataSample(gt_sem_seg=PixelData(data=lab[i][None])) for i in range(len(lab))]
        try:
            losses = head.loss_by_feat(logits, samples)
        except IndexError as e:
            print('  mmseg failed:', e)
            return None
        return {k: v.detach().reshape(()) for k, v in losses.items()}

    cases = {}
    for name, cfg in CASES.items():
        head = MODELS.build(dict(cfg))
        randomise(head, gen)
        head.eval()
        with torch.no_grad():
            logits = head(inputs)
            losses = run_losses(head, logits, label)
            full_losses = run_losses(head, logits, full_label)
        cases[name] = dict(cfg=cfg, state_dict={k: v.clone() for k, v in head.state_dict().items()},
                           logits=logits, losses=losses, full_losses=full_losses)
        print(name, tuple(logits.shape), losses, full_losses)

    ce_logits = torch.randn(2, NUM_CLASSES, 16, 16, generator=gen)
    ce = []
    for cfg in CE_CASES:
        loss = MODELS.build(dict(cfg))
        values = []
        for lab in (label, full_label):
            try:
                values.append(loss(ce_logits, lab[:, ::4, ::4].long(), ignore_index=255))
            except IndexError:
                values.append(None)
        ce.append(dict(cfg=cfg, value=values[0], full_value=values[1]))
        print(cfg, [None if v is None else float(v.sum()) for v in values])

    shapes = {}
    for name, cfg in FULL_SIZE.items():
        head = MODELS.build(dict(cfg))
        shapes[name] = dict(cfg=cfg, shapes={k: list(v.shape) for k, v in head.state_dict().items()})

    torch.save(dict(mmseg_version=__import__('mmseg').__version__, inputs=inputs, label=label.to(torch.uint8),
                    full_label=full_label.to(torch.uint8),
                    cases=cases, ce_logits=ce_logits, ce=ce, shapes=shapes), OUT)
    print('wrote', OUT, os.path.getsize(OUT), 'bytes')


if __name__ == '__main__':
    main()
