"""Custom ops: one public function per op, each picking a Triton or PyTorch path by device.

Importable without Triton and without CUDA: the Triton kernels are imported only when a Triton path is used.
"""
from .causal_conv1d import causal_conv1d
from .neighborhood_attention import neighborhood_attention
from .routing_attention import routing_attention
from .selective_scan import selective_scan, selective_scan_bidirectional

__all__ = ['causal_conv1d', 'neighborhood_attention', 'routing_attention', 'selective_scan',
           'selective_scan_bidirectional']
