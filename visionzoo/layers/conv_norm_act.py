"""Convolution + norm + activation with the parameter names of mmcv's ``ConvModule`` (``.conv``, ``.bn``/``.gn``),
so mmdet/mmseg checkpoints of necks and heads load without key conversion."""
import torch
import torch.nn as nn

from .fuse import fold_bn_into
from .norm_act import ActCfg, NormCfg, build_act, build_norm, norm_abbr

__all__ = ['ConvNormAct']


class ConvNormAct(nn.Module):
    """Convolution, optional norm, optional activation, with the names of mmcv's ``ConvModule``.

    The convolution is ``.conv``, the norm ``.bn`` / ``.gn`` / ``.ln`` and the activation ``.activate``; the
    convolution has a bias only without a norm (mmcv's ``bias='auto'``). ``transposed=True`` makes it an
    ``nn.ConvTranspose2d``. Used by the necks (FPN, PAFPN, EfficientViTFPN) and the segmentation heads.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 norm: NormCfg = None, act: ActCfg = None, transposed: bool = False, owner: str = 'ConvNormAct',
                 dilation: int = 1):
        super().__init__()
        norm_layer = build_norm(norm, out_channels, owner=owner, arg='norm')
        self.norm_name = None if norm_layer is None else norm_abbr(norm_layer)
        conv = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = conv(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, bias=norm_layer is None)
        if norm_layer is not None:
            self.add_module(self.norm_name, norm_layer)
        self.activate = build_act(act, owner=owner, arg='act')

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.norm_name is not None:
            x = getattr(self, self.norm_name)(x)
        if self.activate is not None:
            x = self.activate(x)
        return x

    @torch.no_grad()
    def fuse(self) -> nn.Module:
        """Fold a BatchNorm into a (non-transposed) convolution, in place; eval mode only."""
        norm = getattr(self, self.norm_name) if self.norm_name is not None else None
        if isinstance(norm, nn.modules.batchnorm._BatchNorm) and type(self.conv) is nn.Conv2d:
            self.conv = fold_bn_into(self.conv, norm)
            delattr(self, self.norm_name)
            self.norm_name = None
        return self
