"""Neighbourhood attention written out by brute force, for tests and benchmarks.

Deliberately independent of the op's other modules (no import from :mod:`.window`, :mod:`.torch` or
:mod:`.triton`): the neighbourhood of every query is found by enumeration from NATTEN's definition, not from the
clamp formula the fast paths share, so a mistake in that formula shows up as a disagreement with this module.

NATTEN's definition, per spatial axis of length ``n`` with kernel size ``k`` and dilation ``d``:

* a query only sees keys of its own dilation group (positions with the same remainder mod ``d``);
* non-causal: the query sees a run of ``k`` consecutive members of its group; among all such runs that fit inside
  the axis, the one whose centre member (the ``k // 2``-th, counting from 0) is nearest to the query. Inside the
  axis that run is centred on the query (an even ``k`` sees ``k/2`` keys before, ``k/2 - 1`` after); at the
  borders it is the run closest to it, so the window shifts rather than shrinks;
* causal: the query sees itself and the ``k - 1`` members of its group before it (fewer near the start);
* the bias of a key is ``rpb[h, (j - i) / d + k - 1]`` along the axis (offset counted in group members).

A multi-dimensional neighbourhood is every combination of the axes' neighbours; its bias is
``rpb[h, off_0 + k_0 - 1, off_1 + k_1 - 1, ...]``. Attention is then ordinary softmax attention over that set.

Builds the (N, N) mask and (heads, N, N) logits of the whole map, so memory grows with the square of the number of
positions. Differentiated by autograd (gradients of q, k, v and rpb).
"""
import functools
import itertools
from typing import List, Optional, Tuple

import torch

__all__ = ['neighborhood_attention_reference']


def _axis_neighbours(n: int, kernel: int, dilation: int, causal: bool) -> List[List[int]]:
    """For each position ``i`` of the axis, the sorted positions of its neighbourhood, found by enumeration."""
    out = []
    for i in range(n):
        group = [j for j in range(n) if j % dilation == i % dilation]
        if causal:
            keys = [j for j in group if j <= i][-kernel:]
        else:
            runs = [group[s:s + kernel] for s in range(len(group) - kernel + 1)]
            if not runs:
                raise ValueError(f'neighborhood_attention_reference: an axis of size {n} has a dilation group with '
                                 f'fewer than kernel_size={kernel} positions (dilation {dilation})')
            keys = min(runs, key=lambda run: abs(run[kernel // 2] - i))
            if i not in keys:  # cannot happen for a valid window; a guard on this module's own reasoning
                raise AssertionError(f'query {i} outside its window {keys}')
        out.append(keys)
    return out


@functools.lru_cache(maxsize=16)
def _tables(shape: Tuple[int, ...], kernel: Tuple[int, ...], dilation: Tuple[int, ...],
            causal: Tuple[bool, ...]) -> Tuple[torch.Tensor, torch.Tensor]:
    """(N, N) mask of allowed (query, key) pairs and the (N, N) flat index into the ``(2k-1, ...)`` bias table."""
    per_axis = [_axis_neighbours(*args) for args in zip(shape, kernel, dilation, causal)]
    total = 1
    for n in shape:
        total *= n
    allowed = torch.zeros(total, total, dtype=torch.bool)
    rel = torch.zeros(total, total, dtype=torch.long)
    rows, cols, bias = [], [], []
    for query in itertools.product(*(range(n) for n in shape)):
        qi = 0
        for a, n in enumerate(shape):
            qi = qi * n + query[a]
        for key in itertools.product(*(per_axis[a][query[a]] for a in range(len(shape)))):
            ki, bi = 0, 0
            for a, n in enumerate(shape):
                ki = ki * n + key[a]
                bi = bi * (2 * kernel[a] - 1) + (key[a] - query[a]) // dilation[a] + kernel[a] - 1
            rows.append(qi)
            cols.append(ki)
            bias.append(bi)
    rows, cols = torch.tensor(rows), torch.tensor(cols)
    allowed[rows, cols] = True
    rel[rows, cols] = torch.tensor(bias)
    return allowed, rel


def neighborhood_attention_reference(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: Tuple[int, ...],
                                     dilation: Tuple[int, ...], causal: Tuple[bool, ...],
                                     rpb: Optional[torch.Tensor], scale: float) -> torch.Tensor:
    """Neighbourhood attention as dense attention restricted to brute-force neighbourhoods.

    Arguments are those of :func:`visionzoo.ops.neighborhood_attention` after validation (per-axis tuples).
    Computes in float32 (float64 for float64 inputs) and returns ``q``'s dtype.
    """
    cdt = torch.float64 if q.dtype == torch.float64 else torch.float32
    batch, *spatial, heads, dim = q.shape
    n = q[0, ..., 0, 0].numel()
    allowed, rel = _tables(tuple(spatial), tuple(kernel), tuple(dilation), tuple(causal))
    allowed, rel = allowed.to(q.device), rel.to(q.device)
    qf, kf, vf = (t.reshape(batch, n, heads, dim).to(cdt) for t in (q, k, v))
    logits = torch.einsum('bihd,bjhd->bhij', qf * scale, kf)
    if rpb is not None:
        logits = logits + rpb.reshape(heads, -1).to(cdt)[:, rel]
    logits = logits.masked_fill(~allowed, float('-inf'))
    out = torch.einsum('bhij,bjhd->bihd', torch.softmax(logits, dim=-1), vf)
    return out.reshape(q.shape).to(q.dtype)
