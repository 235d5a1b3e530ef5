"""The neighbourhood rule of one spatial axis, and the tiles of queries the fast paths walk.

The PyTorch and Triton paths derive their masks and bias indices from :func:`axis_window`, so the rule is written
once for them; the tests' reference (``reference.py``) finds each neighbourhood by brute force instead, so it
checks this rule rather than sharing it. Per axis of length ``n`` with kernel ``k``, dilation ``d`` and the causal
flag (NATTEN 0.21 semantics, which are also those of the NAT/DiNAT kernels):

* Position ``i`` belongs to dilation group ``g = i % d`` and has group coordinate ``i' = i // d``; the group holds
  ``L_g = ceil((n - g) / d)`` positions. Attention never leaves a group.
* Non-causal: query ``i'`` sees the ``k`` keys ``start .. start + k - 1`` with
  ``start = clamp(i' - k // 2, 0, L_g - k)`` (the window shifts at the borders; an even kernel sees ``k/2`` keys
  before the query and ``k/2 - 1`` after it).
* Causal: query ``i'`` sees keys ``i' - k < j' <= i'`` (fewer near the start, no shift).
* The bias of key ``j'`` for query ``i'`` is ``rpb[(j' - i') + k - 1]`` along the axis.

A multi-dimensional neighbourhood is the product of its axes' windows, and its bias index the row-major combination
of the axes' indices into the ``(2k-1, ...)`` table.
"""
import functools
from typing import NamedTuple, Sequence, Tuple

import torch

__all__ = ['AxisWindow', 'TileTables', 'axis_window', 'dense_tables', 'tile_tables']


class AxisWindow(NamedTuple):
    """Per position of one axis (int64 tensors of length n): its group, group coordinate and window [lo, hi)."""

    group: torch.Tensor
    coord: torch.Tensor
    lo: torch.Tensor
    hi: torch.Tensor


def _window_bounds(coord: torch.Tensor, group_len: torch.Tensor, kernel: int, causal: bool):
    """Window [lo, hi) in group coordinates for queries at ``coord`` of groups holding ``group_len`` positions."""
    if causal:
        return (coord - kernel + 1).clamp(min=0), coord + 1
    lo = torch.minimum((coord - kernel // 2).clamp(min=0), group_len - kernel)
    return lo, lo + kernel


def axis_window(n: int, kernel: int, dilation: int, causal: bool) -> AxisWindow:
    """The neighbourhood of every position of an axis (requires ``kernel * dilation <= n``)."""
    i = torch.arange(n)
    group, coord = i % dilation, i // dilation
    lo, hi = _window_bounds(coord, (n - group + dilation - 1) // dilation, kernel, causal)
    return AxisWindow(group, coord, lo, hi)


def _axis_dense(n: int, kernel: int, dilation: int, causal: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """(n, n) ``allowed[i, j]`` and the bias index ``rel[i, j]`` (clamped into the table where not allowed)."""
    w = axis_window(n, kernel, dilation, causal)
    j = w.coord[None, :]
    allowed = (w.group[:, None] == w.group[None, :]) & (w.lo[:, None] <= j) & (j < w.hi[:, None])
    rel = (j - w.coord[:, None] + kernel - 1).clamp(0, 2 * kernel - 2)
    return allowed, rel


def _outer(parts: Sequence[torch.Tensor], slots: int, combine):
    """Combine per-axis tensors whose dims are grouped in ``slots`` kinds (e.g. tile, query, key) into one tensor.

    Axis ``a``'s tensor has shape ``(s_1, ..., s_slots)``; it is placed at dims ``a, rank + a, 2 rank + a, ...`` of a
    ``slots * rank``-dim tensor and folded in with ``combine(acc, part, a)``; the result is reshaped to one flat
    dim per slot (row-major over the axes).
    """
    rank = len(parts)
    acc = None
    for a, part in enumerate(parts):
        shape = [1] * (slots * rank)
        for s in range(slots):
            shape[s * rank + a] = part.shape[s]
        part = part.reshape(shape)
        acc = part if acc is None else combine(acc, part, a)
    sizes = [functools.reduce(lambda x, y: x * y, acc.shape[s * rank:(s + 1) * rank], 1) for s in range(slots)]
    return acc.reshape(sizes)


def _combine_index(parts: Sequence[torch.Tensor], extents: Sequence[int], slots: int) -> torch.Tensor:
    """Row-major flat index from per-axis indices (``extents``: the size of each axis' index range)."""
    return _outer(parts, slots, lambda acc, part, a: acc * extents[a] + part)


@functools.lru_cache(maxsize=16)
def dense_tables(shape: Tuple[int, ...], kernel: Tuple[int, ...], dilation: Tuple[int, ...],
                 causal: Tuple[bool, ...]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, N) boolean mask and (N, N) bias index into the flattened ``(2k-1, ...)`` table, N = prod(shape)."""
    axes = [_axis_dense(*args) for args in zip(shape, kernel, dilation, causal)]
    allowed = _outer([a for a, _ in axes], 2, lambda acc, part, a: acc & part)
    rel = _combine_index([r for _, r in axes], [2 * k - 1 for k in kernel], 2)
    return allowed, rel


class TileTables(NamedTuple):
    """Query tiles and the key block that holds every neighbour of a tile's queries (CPU tensors: int64 positions,
    bool mask, int32 bias index).

    Positions are flat row-major indices into the spatial axes; ``N`` (the number of positions) marks a padding
    slot, which the paths map to a row of zeros.
    """

    query: torch.Tensor    # (tiles, Tq) flat query positions, N for padding
    key: torch.Tensor      # (tiles, Wk) flat key positions, N for padding
    allowed: torch.Tensor  # (tiles, Tq, Wk) bool; rows of padding queries are all True (finite softmax)
    rel: torch.Tensor      # (tiles, Tq, Wk) int32 index into the flattened (2k-1, ...) bias table


def _axis_tiles(n: int, kernel: int, dilation: int, causal: bool, tile: int):
    """Tiles of one axis: positions (n = padding), key positions, allowed mask, bias index.

    Queries are tiled in group coordinates, ``tile`` consecutive queries of one dilation group per tile. Window
    starts never decrease along a group and grow by at most one per query, so the neighbours of a tile lie in
    ``tile + kernel - 1`` consecutive keys of the group; the block starts at the first query's window, moved left
    where it would run past the group's end.
    """
    padded = -(-n // dilation)
    tile = min(tile, padded)
    width = min(tile + kernel - 1, padded)
    ntiles = -(-padded // tile)
    group = torch.arange(dilation)[:, None, None]
    group_len = (n - group + dilation - 1) // dilation
    q = (torch.arange(ntiles)[:, None] * tile + torch.arange(tile))[None]  # (1, ntiles, tile)
    lo, hi = _window_bounds(q, group_len, kernel, causal)
    start = torch.minimum(lo[:, :, :1], group_len - width).clamp(min=0)
    key = start + torch.arange(width)  # (groups, ntiles, width)
    q_valid, k_valid = q < group_len, key < group_len
    allowed = (q_valid[..., None] & k_valid[..., None, :] & (lo[..., None] <= key[..., None, :])
               & (key[..., None, :] < hi[..., None]))
    rel = (key[..., None, :] - q[..., None] + kernel - 1).clamp(0, 2 * kernel - 2)
    q_pos = torch.where(q_valid, q * dilation + group, n)
    k_pos = torch.where(k_valid, key * dilation + group, n)
    tiles = dilation * ntiles
    return (q_pos.reshape(tiles, tile), k_pos.reshape(tiles, width), allowed.reshape(tiles, tile, width),
            rel.reshape(tiles, tile, width))


@functools.lru_cache(maxsize=32)
def tile_tables(shape: Tuple[int, ...], kernel: Tuple[int, ...], dilation: Tuple[int, ...],
                causal: Tuple[bool, ...], tile: Tuple[int, ...]) -> TileTables:
    """The query tiles of a ``shape`` map, ``tile[a]`` group-consecutive queries along axis ``a`` per tile."""
    axes = [_axis_tiles(*args) for args in zip(shape, kernel, dilation, causal, tile)]
    total = functools.reduce(lambda x, y: x * y, shape, 1)

    def positions(which: int) -> torch.Tensor:
        # a padding slot (== n) on any axis makes the flat position the padding slot N
        pad = _outer([(p == n) for p, n in zip((ax[which] for ax in axes), shape)], 2, lambda acc, part, a: acc | part)
        flat = _combine_index([ax[which].clamp(max=n - 1) for ax, n in zip(axes, shape)], shape, 2)
        return torch.where(pad, total, flat)

    allowed = _outer([ax[2] for ax in axes], 3, lambda acc, part, a: acc & part)
    allowed = allowed | ~allowed.any(-1, keepdim=True)
    # int32: a (tiles, Tq, Wk) table is the largest of the cached tables, and a bias index is at most (2k-1)^3
    rel = _combine_index([ax[3] for ax in axes], [2 * k - 1 for k in kernel], 3).to(torch.int32)
    return TileTables(positions(0), positions(1), allowed, rel)
