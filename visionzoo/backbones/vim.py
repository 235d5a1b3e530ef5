"""Vision Mamba (Vim): bidirectional state-space blocks on image patches, with a middle class token.

Paper: "Vision Mamba: Efficient Visual Representation Learning with Bidirectional State Space Model",
Zhu et al., ICML 2024 (arXiv:2401.09417). Official code and weights: https://github.com/hustvl/Vim.

The architecture and state_dict layout are the official ones ("bimamba v2", ``if_divide_out``, middle class
token, absolute position embedding, RMSNorm, fp32 residual stream), so official checkpoints load unchanged
through :func:`checkpoint_filter_fn`. What differs from the official code:

* the selective scan and causal conv1d run on :mod:`visionzoo.ops` (Triton on CUDA, PyTorch on CPU): no compiled
  extension, no fork of mamba-ssm, training and inference on any device;
* the backward direction is computed in the natural token order (an anti-causal convolution and a reversed scan)
  instead of on flipped copies; the result is the same;
* any input whose sides fit the patch stride works: the position embedding is resampled (bicubic) to the token
  grid, keeping the class token's embedding apart (the official resampling treats index 0 as the class token,
  which is wrong for a middle class token);
* ``class_token=False`` gives the dense-prediction variant (no class token), and :meth:`forward_intermediates`
  returns stride-16 (or stride-8) maps of the residual stream for detection and segmentation necks.
"""
import math
from typing import List, Optional, Tuple, Union

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.layers import (DropPath, RmsNorm, calculate_drop_path_rates, lecun_normal_, register_notrace_function,
                         trunc_normal_)
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices

from ..layers.pos_embed import resample_grid_tokens
from ..ops import causal_conv1d, selective_scan
from ..utils.errors import ArgumentError
from ..utils.options import argument_error
from ._checkpoint import unwrap_state_dict
from ._contract import ClassifierMixin, check_output_fmt

__all__ = ['VisionMamba', 'VimMixer', 'VimBlock', 'checkpoint_filter_fn']

# FX tracing (timm's feature_cls='fx', torchvision's feature extraction, FX quantisation): the custom ops and the
# input-size checks branch on shapes, so a traced model calls each of them as one node.
register_notrace_function(causal_conv1d)
register_notrace_function(selective_scan)
torch.fx.wrap('causal_conv1d')
torch.fx.wrap('selective_scan')
torch.fx.wrap('resample_grid_tokens')


class VimMixer(nn.Module):
    """Bidirectional Mamba mixer (Vim's "bimamba v2").

    A shared ``in_proj`` gives x and the gate z; each direction has its own depthwise causal conv1d + SiLU,
    ``x_proj`` (to dt, B, C), ``dt_proj``, ``A_log`` and ``D``; the backward direction (``*_b``) runs over the
    reversed sequence. Output: ``out_proj(silu(z) * (y_fwd + y_bwd) / 2)`` (a sum without ``divide_out``).

    Parameter names are the official ones (``in_proj``, ``conv1d``, ``x_proj``, ``dt_proj``, ``A_log``, ``D``,
    ``conv1d_b``, ``x_proj_b``, ``dt_proj_b``, ``A_b_log``, ``D_b``, ``out_proj``).
    """

    def __init__(self, dim: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Union[int, str] = 'auto', dt_min: float = 1e-3, dt_max: float = 0.1,
                 dt_init_floor: float = 1e-4, conv_bias: bool = True, bias: bool = False, divide_out: bool = True):
        super().__init__()
        self.d_inner = int(expand * dim)
        self.d_state = d_state
        self.dt_rank = math.ceil(dim / 16) if dt_rank == 'auto' else int(dt_rank)
        self.divide_out = divide_out
        self.in_proj = nn.Linear(dim, self.d_inner * 2, bias=bias)
        for suffix in ('', '_b'):
            self.add_module('conv1d' + suffix, nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner,
                                                         padding=d_conv - 1, bias=conv_bias))
            self.add_module('x_proj' + suffix, nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False))
            dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            self._init_dt_proj(dt_proj, dt_min, dt_max, dt_init_floor)
            self.add_module('dt_proj' + suffix, dt_proj)
            # S4D-real initialisation: A[d, n] = -(n + 1), stored as log(-A) in fp32
            a_log = torch.log(torch.arange(1, d_state + 1, dtype=torch.float32)).repeat(self.d_inner, 1)
            self.register_parameter('A_log' if not suffix else 'A_b_log', nn.Parameter(a_log))
            self.register_parameter('D' + suffix, nn.Parameter(torch.ones(self.d_inner)))
        self.out_proj = nn.Linear(self.d_inner, dim, bias=bias)

    def _init_dt_proj(self, dt_proj: nn.Linear, dt_min: float, dt_max: float, dt_init_floor: float) -> None:
        """Weights uniform in ±dt_rank^-0.5; bias = softplus^-1(dt) with dt log-uniform in [dt_min, dt_max]."""
        std = self.dt_rank ** -0.5
        nn.init.uniform_(dt_proj.weight, -std, std)
        dt = torch.exp(torch.rand(self.d_inner) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = dt.clamp(min=dt_init_floor)
        with torch.no_grad():
            dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        dt_proj.bias._no_reinit = True  # keep it when the model-wide init zeroes Linear biases

    def _direction(self, x: torch.Tensor, z: torch.Tensor, reverse: bool) -> torch.Tensor:
        """One direction on (batch, d_inner, seqlen) x and gate z, in the natural token order."""
        suffix = '_b' if reverse else ''
        conv, x_proj, dt_proj = (getattr(self, name + suffix) for name in ('conv1d', 'x_proj', 'dt_proj'))
        a_log, d = (self.A_b_log, self.D_b) if reverse else (self.A_log, self.D)
        x = causal_conv1d(x, conv.weight.squeeze(1), conv.bias, 'silu', reverse=reverse)
        dt, b, c = x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, dt_proj.weight).transpose(1, 2)  # bias goes in as delta_bias (fp32), as in mamba
        return selective_scan(x, delta, -torch.exp(a_log.float()), b.transpose(1, 2), c.transpose(1, 2), d.float(),
                              z=z, delta_bias=dt_proj.bias.float(), delta_softplus=True, reverse=reverse)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """(batch, seqlen, dim) -> (batch, seqlen, dim)."""
        x, z = self.in_proj(hidden).transpose(1, 2).chunk(2, dim=1)
        y = self._direction(x, z, reverse=False)
        y = y.add_(self._direction(x, z, reverse=True))  # in place: the scan keeps neither output for backward
        if self.divide_out:
            y = y.mul_(0.5)
        return self.out_proj(y.transpose(1, 2))


class VimBlock(nn.Module):
    """"Add → RMSNorm → mixer" with the residual stream carried separately (in fp32 by default).

    ``forward(hidden, residual)`` returns ``(mixer_out, residual)``, where ``residual`` is the running sum of the
    patch tokens and every earlier mixer output (this block's drop path applies to the incoming ``hidden``).
    """

    def __init__(self, dim: int, drop_path: float = 0., norm_eps: float = 1e-5, residual_in_fp32: bool = True,
                 **mixer_kwargs):
        super().__init__()
        self.residual_in_fp32 = residual_in_fp32
        self.mixer = VimMixer(dim, **mixer_kwargs)
        self.norm = RmsNorm(dim, eps=norm_eps)
        self.drop_path = DropPath(drop_path) if drop_path > 0. else nn.Identity()

    def forward(self, hidden: torch.Tensor, residual: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        residual = hidden if residual is None else residual + self.drop_path(hidden)
        if self.residual_in_fp32:
            residual = residual.float()
        return self.mixer(self.norm(residual)), residual


class PatchEmbed(nn.Module):
    """Conv patch embedding (kernel ``patch_size``, stride ``stride``; overlapping when stride < patch)."""

    def __init__(self, patch_size: int = 16, stride: int = 16, in_chans: int = 3, embed_dim: int = 192):
        super().__init__()
        self.patch_size = patch_size
        self.stride = stride
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=stride)

    def grid_size(self, height: int, width: int) -> Tuple[int, int]:
        """Token grid of an input image; ValueError unless both sides fit the patch stride."""
        return _token_grid(height, width, self.patch_size, self.stride)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """(B, C, H, W) -> row-major tokens (B, gh * gw, embed_dim) and the grid (gh, gw)."""
        _check_images(x.shape, self.proj.in_channels)
        grid = _token_grid(x.shape[-2], x.shape[-1], self.patch_size, self.stride)
        return self.proj(x).flatten(2).transpose(1, 2), grid


@torch.fx.wrap
@register_notrace_function
def _check_images(shape: torch.Size, in_chans: int) -> None:
    """ArgumentError unless ``shape`` is (B, in_chans, H, W) with B >= 1 (H and W are checked by _token_grid)."""
    if len(shape) != 4 or shape[0] < 1 or shape[1] != in_chans:
        raise ArgumentError(f'VisionMamba(x=tensor of shape {tuple(shape)}): expected images of shape '
                            f'(B, {in_chans}, H, W) with B >= 1')


@torch.fx.wrap
@register_notrace_function
def _token_grid(height: int, width: int, patch: int, stride: int) -> Tuple[int, int]:
    """Token grid of a ``height`` x ``width`` image; ValueError unless both sides fit the patch stride."""
    if height < patch or width < patch or (height - patch) % stride or (width - patch) % stride:
        what = f'multiples of {stride}' if patch % stride == 0 else f'{patch} + a multiple of {stride}'
        raise ValueError(f'input image size must be at least {patch} and its sides {what} (patch {patch}, '
                         f'stride {stride}); got {height}x{width}')
    return (height - patch) // stride + 1, (width - patch) // stride + 1


class VisionMamba(ClassifierMixin, nn.Module):
    """Vision Mamba (Vim).

    Args:
        img_size: input size the position embedding is laid out for (other sizes are resampled on the fly).
        patch_size: patch (conv kernel) size.
        stride: patch stride (16, or 8 for the "+" fine-tuned variants).
        in_chans: input channels.
        num_classes: classifier classes (0 for no classifier).
        global_pool: ``'token'`` (the middle class token), ``'avg'`` (mean of the patch tokens) or ``''``.
        embed_dim: token width.
        depth: number of blocks.
        d_state, d_conv, expand, dt_rank: mixer sizes (16, 4, 2, ceil(embed_dim / 16) in every official model).
        class_token: insert a class token in the middle of the sequence (False for dense prediction).
        drop_rate: dropout before the classifier.
        pos_drop_rate: dropout after adding the position embedding.
        drop_path_rate: stochastic depth; as official, block i gets ``[0] + linspace(0, rate, depth)`` [i] and the
            final residual add gets the full rate.
        norm_eps: RMSNorm epsilon.
        residual_in_fp32: keep the residual stream in float32 (safe under autocast).
        divide_out: average rather than sum the two scan directions (the official models average).
        dense_features: what ``forward_intermediates`` (and so ``features_only``) returns after each chosen block:
            ``'residual'`` the residual stream ``residual + mixer output`` (the official dense code's
            ``use_residual_as_feature=True, last_layer_process='add'``, as its Vim-S scripts use) or ``'mixer'`` the
            block's mixer output alone (``VisionMambaSeg``'s defaults, as its Vim-Ti UperNet uses).
    """

    def __init__(self, img_size: Union[int, Tuple[int, int]] = 224, patch_size: int = 16, stride: int = 16,
                 in_chans: int = 3, num_classes: int = 1000, global_pool: Optional[str] = None,
                 embed_dim: int = 192, depth: int = 24, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: Union[int, str] = 'auto', class_token: bool = True, drop_rate: float = 0.,
                 pos_drop_rate: float = 0., drop_path_rate: float = 0., norm_eps: float = 1e-5,
                 residual_in_fp32: bool = True, divide_out: bool = True, dense_features: str = 'residual'):
        super().__init__()
        if dense_features not in ('residual', 'mixer'):
            raise argument_error(type(self).__name__, 'dense_features', dense_features,
                                 "expected 'residual' or 'mixer'")
        self.dense_features = dense_features
        self.has_class_token = class_token
        self.embed_dim = embed_dim
        self.num_prefix_tokens = 1 if class_token else 0

        self.patch_embed = PatchEmbed(patch_size, stride, in_chans, embed_dim)
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.pos_grid = self.patch_embed.grid_size(*img_size)
        num_patches = self.pos_grid[0] * self.pos_grid[1]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.pos_embed = nn.Parameter(torch.zeros(1, num_patches + self.num_prefix_tokens, embed_dim))
        self.pos_drop = nn.Dropout(pos_drop_rate)

        dpr = [0.] + calculate_drop_path_rates(drop_path_rate, depth)
        mixer_kwargs = dict(d_state=d_state, d_conv=d_conv, expand=expand, dt_rank=dt_rank, divide_out=divide_out)
        self.layers = nn.ModuleList([
            VimBlock(embed_dim, drop_path=dpr[i], norm_eps=norm_eps, residual_in_fp32=residual_in_fp32,
                     **mixer_kwargs)
            for i in range(depth)])
        self.drop_path = DropPath(drop_path_rate) if drop_path_rate > 0. else nn.Identity()
        self.norm_f = RmsNorm(embed_dim, eps=norm_eps)
        self.feature_info = [dict(module=f'layers.{i}', num_chs=embed_dim, reduction=stride) for i in range(depth)]
        if global_pool is None:
            global_pool = 'token' if class_token else 'avg'
        self._init_classifier(embed_dim, num_classes, global_pool, drop_rate)
        self.init_weights()

    def init_weights(self) -> None:
        """Official initialisation: truncated normal for embeddings and head, zero Linear biases (except
        ``dt_proj``), Kaiming-uniform ``out_proj`` scaled by 1/sqrt(depth)."""
        trunc_normal_(self.pos_embed, std=.02)
        if self.cls_token is not None:
            trunc_normal_(self.cls_token, std=.02)
        nn.init.zeros_(self.patch_embed.proj.bias)
        lecun_normal_(self.patch_embed.proj.weight)
        if isinstance(self.head, nn.Linear):
            trunc_normal_(self.head.weight, std=.02)
            nn.init.zeros_(self.head.bias)
        for layer in self.layers:
            for module in layer.modules():
                if isinstance(module, nn.Linear) and module.bias is not None \
                        and not getattr(module.bias, '_no_reinit', False):
                    nn.init.zeros_(module.bias)
            out_proj = layer.mixer.out_proj.weight
            nn.init.kaiming_uniform_(out_proj, a=math.sqrt(5))
            with torch.no_grad():
                out_proj /= math.sqrt(len(self.layers))

    FINAL_NORM = 'norm_f'

    def _checked_pool(self, global_pool: str) -> str:
        if global_pool not in ('token', 'avg', '') or (global_pool == 'token' and not self.has_class_token):
            raise argument_error(type(self).__name__, 'global_pool', global_pool,
                                 f"global_pool must be 'token' (with a class token), 'avg' or '', got {global_pool!r}")
        return global_pool

    @torch.jit.ignore
    def no_weight_decay(self) -> set:
        return {'pos_embed', 'cls_token'}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        return dict(stem=r'^cls_token|^pos_embed|^patch_embed',
                    blocks=[(r'^layers\.(\d+)', None), (r'^norm_f', (99999,))])

    def _embed(self, x: torch.Tensor) -> Tuple[torch.Tensor, Tuple[int, int]]:
        """Patch tokens (+ middle class token) with position embeddings: (B, L, C) and the token grid."""
        x, grid = self.patch_embed(x)
        cls_index = self.pos_grid[0] * self.pos_grid[1] // 2 if self.has_class_token else None
        pos = resample_grid_tokens(self.pos_embed, self.pos_grid, grid, 'bicubic', cls_index)
        if self.cls_token is not None:
            middle = x.shape[1] // 2
            x = torch.cat((x[:, :middle], self.cls_token.expand(x.shape[0], -1, -1), x[:, middle:]), dim=1)
        return self.pos_drop(x + pos), grid

    def _run_layer(self, layer: VimBlock, hidden: torch.Tensor, residual: Optional[torch.Tensor]):
        return self._checkpointed(layer, hidden, residual)

    def _final_norm(self, hidden: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.norm_f(residual + self.drop_path(hidden))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> normalised tokens (B, L, embed_dim); with a class token it sits at ``(L - 1) // 2``."""
        hidden, _ = self._embed(x)
        residual = None
        for layer in self.layers:
            hidden, residual = self._run_layer(layer, hidden, residual)
        return self._final_norm(hidden, residual)

    def _patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Drop the middle class token from a (B, L, C) sequence."""
        if not self.has_class_token:
            return x
        middle = (x.shape[1] - 1) // 2
        return torch.cat((x[:, :middle], x[:, middle + 1:]), dim=1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == 'token':
            x = x[:, (x.shape[1] - 1) // 2]
        elif self.global_pool == 'avg':
            x = self._patch_tokens(x).mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward_intermediates(self, x: torch.Tensor, indices: Optional[Union[int, List[int]]] = None,
                              norm: bool = False, stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False, return_prefix_tokens: bool = False):
        """Features after chosen blocks: the residual stream ``residual + mixer_out`` after block i (the official
        dense code's ``last_layer_process='add'``), or the mixer output alone with ``dense_features='mixer'``;
        normalised by ``norm_f`` when ``norm`` (``'add & norm'``).

        Args:
            indices: int n for the last n blocks, or a list of block indices (negative from the end); None: all.
            norm: apply the final RMSNorm to each feature.
            stop_early: stop after the last wanted block (only with ``intermediates_only``).
            output_fmt: ``'NCHW'`` maps (B, C, gh, gw) or ``'NLC'`` tokens (B, gh*gw, C).
            intermediates_only: return only the list of features.
            return_prefix_tokens: with a class token, also return it per feature as ``(feature, cls (B, C))``.
        """
        check_output_fmt(self, output_fmt, ('NCHW', 'NLC'))
        take_indices, max_index = feature_take_indices(len(self.layers), indices)
        hidden, grid = self._embed(x)
        layers = self.layers[:max_index + 1] if stop_early and intermediates_only else self.layers
        intermediates = []
        residual = None
        for i, layer in enumerate(layers):
            hidden, residual = self._run_layer(layer, hidden, residual)
            if i not in take_indices:
                continue
            feat = hidden if self.dense_features == 'mixer' else residual + hidden
            feat = (self.norm_f(feat) if norm else feat).to(x.dtype)
            tokens = self._patch_tokens(feat)
            if output_fmt == 'NCHW':
                tokens = tokens.transpose(1, 2).reshape(tokens.shape[0], -1, grid[0], grid[1])
            if return_prefix_tokens and self.has_class_token:
                tokens = (tokens, feat[:, (feat.shape[1] - 1) // 2])
            intermediates.append(tokens)
        if intermediates_only:
            return intermediates
        return self._final_norm(hidden, residual), intermediates

    def _num_levels(self) -> int:
        return len(self.layers)

    def _prune_levels(self, keep: int) -> None:
        self.layers = self.layers[:keep]


def checkpoint_filter_fn(state_dict: dict, model: VisionMamba) -> dict:
    """Official Vim checkpoints (or their ``model`` entry) -> this model.

    Drops training-only entries (RoPE buffers, a DDP ``module.`` prefix), resamples ``pos_embed`` to the model's
    grid (keeping the middle class token's embedding apart), and, for a model built with ``class_token=False``,
    removes the class token and its position embedding.
    """
    out = {k: v for k, v in unwrap_state_dict(state_dict).items() if not k.startswith('rope.')}
    pos = out.get('pos_embed')
    if pos is not None:
        ckpt_has_cls = 'cls_token' in out
        n = pos.shape[1] - int(ckpt_has_cls)
        side = math.isqrt(n)
        if side * side != n:
            raise ValueError(f'pos_embed: expected a square grid of patch embeddings (plus a class token), '
                             f'got {pos.shape[1]} entries')
        cls_index = n // 2 if ckpt_has_cls else None
        if ckpt_has_cls and not model.has_class_token:
            out.pop('cls_token')
            pos = torch.cat((pos[:, :cls_index], pos[:, cls_index + 1:]), dim=1)
            cls_index = None
        out['pos_embed'] = resample_grid_tokens(pos, (side, side), model.pos_grid, 'bicubic', cls_index)
    return out


def _create_vim(variant: str, pretrained: bool = False, **kwargs) -> VisionMamba:
    step = max(kwargs.get('depth', 24) // 4, 1)  # four evenly spaced blocks by default: 5, 11, 17, 23 of 24
    out_indices = kwargs.pop('out_indices', tuple(range(step - 1, kwargs.get('depth', 24), step))[-4:])
    return build_model_with_cfg(VisionMamba, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=out_indices, feature_cls='getter'), **kwargs)


def _cfg(**kwargs) -> dict:
    return {
        'num_classes': 1000, 'input_size': (3, 224, 224), 'pool_size': None, 'crop_pct': .875,
        'interpolation': 'bicubic', 'fixed_input_size': False, 'mean': IMAGENET_DEFAULT_MEAN,
        'std': IMAGENET_DEFAULT_STD, 'first_conv': 'patch_embed.proj', 'classifier': 'head',
        'license': 'apache-2.0', 'paper_ids': 'arXiv:2401.09417', 'origin_url': 'https://github.com/hustvl/Vim',
        **kwargs,
    }


# Official weights (ImageNet-1k, dict key "model"); the "+" models are the stride-8 fine-tunes, stored in the same
# Hugging Face repositories as their stride-16 parents.
default_cfgs = generate_default_cfgs({
    'vim_tiny.in1k': _cfg(hf_hub_id='hustvl/Vim-tiny-midclstok', hf_hub_filename='vim_t_midclstok_76p1acc.pth'),
    'vim_small.in1k': _cfg(hf_hub_id='hustvl/Vim-small-midclstok', hf_hub_filename='vim_s_midclstok_80p5acc.pth'),
    'vim_base.in1k': _cfg(hf_hub_id='hustvl/Vim-base-midclstok', hf_hub_filename='vim_b_midclstok_81p9acc.pth'),
    'vim_tiny_stride8.in1k': _cfg(hf_hub_id='hustvl/Vim-tiny-midclstok',
                                  hf_hub_filename='vim_t_midclstok_ft_78p3acc.pth'),
    'vim_small_stride8.in1k': _cfg(hf_hub_id='hustvl/Vim-small-midclstok',
                                   hf_hub_filename='vim_s_midclstok_ft_81p6acc.pth'),
})


@register_model
def vim_tiny(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-Ti: 192 wide, 24 blocks, patch 16 stride 16 (7.15M params, 76.1% ImageNet top-1)."""
    return _create_vim('vim_tiny', pretrained, **dict(dict(embed_dim=192, depth=24), **kwargs))


@register_model
def vim_small(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-S: 384 wide, 24 blocks, patch 16 stride 16 (25.8M params, 80.5%)."""
    return _create_vim('vim_small', pretrained, **dict(dict(embed_dim=384, depth=24), **kwargs))


@register_model
def vim_base(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-B: 768 wide, 24 blocks, patch 16 stride 16 (97.6M params, 81.9%)."""
    return _create_vim('vim_base', pretrained, **dict(dict(embed_dim=768, depth=24), **kwargs))


@register_model
def vim_tiny_stride8(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-Ti+: Vim-Ti with patch 16 at stride 8 (729 tokens at 224), fine-tuned 30 epochs (78.3%)."""
    return _create_vim('vim_tiny_stride8', pretrained, **dict(dict(embed_dim=192, depth=24, stride=8), **kwargs))


@register_model
def vim_small_stride8(pretrained: bool = False, **kwargs) -> VisionMamba:
    """Vim-S+: Vim-S with patch 16 at stride 8, fine-tuned 30 epochs (81.6%)."""
    return _create_vim('vim_small_stride8', pretrained, **dict(dict(embed_dim=384, depth=24, stride=8), **kwargs))
