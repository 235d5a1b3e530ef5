"""What the datasets share: the pipeline builder and the loop that skips unreadable samples.

``ImageFolderDataset`` and ``CocoDataset`` both build their ``pipeline`` with :func:`build_pipeline` and inherit
``__getitem__`` from :class:`SampleDataset`, so a bad pipeline entry and an unreadable sample give the same error type
(:class:`~visionzoo.utils.errors.DatasetError`) and are skipped the same way.
"""
import difflib
import warnings
from typing import Any, Callable, Iterator, List, Sequence, Union

from ..registry import TRANSFORMS
from ..utils.errors import DatasetError

__all__ = ['Compose', 'build_pipeline', 'SampleDataset']

_EXPECTED = "expected a transform config dict with a registered 'type', or a callable"


class Compose:
    """Transforms applied in order; with none, the input comes back unchanged."""

    def __init__(self, transforms: Sequence[Callable]):
        self.transforms: List[Callable] = list(transforms)

    def __call__(self, data: Any) -> Any:
        for t in self.transforms:
            data = t(data)
        return data

    def __iter__(self) -> Iterator[Callable]:
        return iter(self.transforms)

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f'Compose({self.transforms!r})'


def _build_step(t, where: str) -> Callable:
    if isinstance(t, dict):
        name = t.get('type')
        if name is None:
            raise DatasetError(f"{where}: {t!r} has no 'type' ({_EXPECTED})")
        if isinstance(name, str) and TRANSFORMS.get(name) is None:
            close = difflib.get_close_matches(name.split('.', 1)[-1], sorted(TRANSFORMS.module_dict), n=3)
            hint = f' (did you mean: {", ".join(close)}?)' if close else ''
            raise DatasetError(f'{where}: unknown transform type {name!r}{hint}; {_EXPECTED}')
        return TRANSFORMS.build(t)
    if callable(t):
        return t
    raise DatasetError(f'{where}: got {t!r} of type {type(t).__name__}; {_EXPECTED}')


def build_pipeline(pipeline: Union[Sequence, dict, Callable, None]) -> Compose:
    """``None``, one transform (config dict or callable) or a list of them -> a :class:`Compose`.

    Config dicts are built from the ``TRANSFORMS`` registry. A bad entry raises a DatasetError naming its position,
    ``pipeline[i]`` (``pipeline`` for a single transform), and the entry itself.
    """
    if pipeline is None:
        return Compose([])
    if isinstance(pipeline, dict) or callable(pipeline):
        return Compose([_build_step(pipeline, 'pipeline')])
    if not isinstance(pipeline, (list, tuple)):
        raise DatasetError(f'pipeline: got {pipeline!r} of type {type(pipeline).__name__}; expected a transform '
                           f'config dict, a callable, or a list of them')
    return Compose([_build_step(t, f'pipeline[{i}]') for i, t in enumerate(pipeline)])


class SampleDataset:
    """Base of the datasets: ``__getitem__`` with the one skip-unreadable-sample loop.

    A subclass calls :meth:`_init_sample_dataset` from its ``__init__`` and implements ``__len__`` and
    ``_prepare(i)`` (read sample ``i`` and run the pipeline on it). When ``_prepare`` raises a DatasetError (an
    image that cannot be decoded, a record the pipeline rejects), ``dataset[idx]`` re-raises it with a hint at the
    skip option; with skipping on, it warns once per sample, remembers the sample as bad and returns the next
    readable sample instead (wrapping around), and raises only when none is readable.
    """

    def _init_sample_dataset(self, pipeline, *, skip: bool, skip_option: str, source: str,
                             noun: str = 'image') -> None:
        """``skip_option`` is the setting that turns skipping on (``"skip_corrupt=True"``), ``source`` the folder
        or file named when no sample at all is readable, ``noun`` what one sample is."""
        self.pipeline = build_pipeline(pipeline)
        self._skip_unreadable = bool(skip)
        self._skip_option = skip_option
        self._source = source
        self._noun = noun
        self._bad = set()
        self._drop_unreadable = False

    @property
    def skips_unreadable(self) -> bool:
        """Whether unreadable samples are skipped (with a warning) instead of raising."""
        return self._skip_unreadable

    def drop_unreadable(self) -> None:
        """For evaluation: ``dataset[i]`` of an unreadable sample returns ``None`` (warned) instead of the next
        readable sample, which would then be scored twice. The evaluation loops drop those items and count them."""
        self._drop_unreadable = True

    def __len__(self) -> int:
        raise NotImplementedError

    def _prepare(self, i: int):
        raise NotImplementedError

    def __getitem__(self, idx: int):
        n = len(self)
        idx = range(n)[idx]  # IndexError past the end, so that iteration stops
        for step in range(n):
            i = (idx + step) % n
            if i in self._bad:
                if self._drop_unreadable:
                    return None
                continue
            try:
                return self._prepare(i)
            except DatasetError as e:
                if not self._skip_unreadable:
                    raise DatasetError(f'{e}; set {self._skip_option} on the dataset to skip unreadable '
                                       f'{self._noun}s with a warning') from None
                self._bad.add(i)
                if self._drop_unreadable:
                    warnings.warn(f'skipping unreadable {self._noun}: {e} ({self._skip_option}); it is not scored',
                                  stacklevel=2)
                    return None
                warnings.warn(f'skipping unreadable {self._noun}: {e} ({self._skip_option}); using the next '
                              f'{self._noun}', stacklevel=2)
        raise DatasetError(f'{self._source}: none of the {n} {self._noun}s could be read (expected at least one '
                           f'readable {self._noun})')
