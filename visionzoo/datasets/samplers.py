"""Batch samplers for detection data."""
from typing import Iterator, List

from torch.utils.data import BatchSampler, Sampler

from ..registry import DATA_SAMPLERS
from ..utils.errors import ConfigError

__all__ = ['AspectRatioBatchSampler']


@DATA_SAMPLERS.register_module()
class AspectRatioBatchSampler(BatchSampler):
    """Batches of images of one orientation (mmdet's ``AspectRatioBatchSampler``), so that padding to the largest
    image of a batch wastes little.

    Indices from ``sampler`` go to a landscape (``width >= height``) or a portrait bucket, read from
    ``sampler.dataset.get_data_info(idx)``; a bucket is yielded as soon as it holds ``batch_size`` indices. At the end
    the two leftover buckets are merged and yielded in batches of ``batch_size`` (the last one shorter unless
    ``drop_last``), so ``len(self)`` is exactly that of a plain ``BatchSampler`` over ``sampler``.
    """

    def __init__(self, sampler: Sampler, batch_size: int, drop_last: bool = False):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f'AspectRatioBatchSampler.batch_size: expected a positive int, got {batch_size!r}')
        if not hasattr(getattr(sampler, 'dataset', None), 'get_data_info'):
            raise ConfigError('AspectRatioBatchSampler: expected a sampler with a .dataset that has get_data_info() '
                              f'(such as mmengine DefaultSampler over a CocoDataset), got {type(sampler).__name__}')
        super().__init__(sampler, batch_size, drop_last)

    def __iter__(self) -> Iterator[List[int]]:
        dataset = self.sampler.dataset
        buckets: List[List[int]] = [[], []]  # landscape, portrait
        for idx in self.sampler:
            info = dataset.get_data_info(idx)
            bucket = buckets[0 if info['width'] >= info['height'] else 1]
            bucket.append(idx)
            if len(bucket) == self.batch_size:
                yield bucket[:]
                bucket.clear()
        left = buckets[0] + buckets[1]
        for start in range(0, len(left), self.batch_size):
            batch = left[start:start + self.batch_size]
            if len(batch) == self.batch_size or not self.drop_last:
                yield batch

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size
