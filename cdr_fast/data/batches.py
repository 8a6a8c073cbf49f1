"""Batches of examples, whether they are a tensor or image files read as they are needed.

``batches(examples, index_batches, device)`` yields each batch's examples on ``device``, in the
order given: a tensor on the device is indexed (a ``range`` is a slice, no gather); ``ImageFiles``
are decoded on their DataLoader workers, prefetched while the device works and copied from pinned
memory. Either way the values are the same (``files``), so which one a run holds never changes
its results.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from .files import ImageFiles, worker_batches

Examples = Tensor | ImageFiles
PREFETCH = 4  # batches each worker decodes ahead


def ranges(lo: int, hi: int, batch_size: int) -> list[range]:
    """``range(lo, hi)`` cut into consecutive batches of ``batch_size`` (the last may be shorter)."""
    return [range(i, min(i + batch_size, hi)) for i in range(lo, hi, batch_size)]


def batches(examples: Examples, index_batches: Sequence[Tensor | range], device: torch.device) -> Iterator[Tensor]:
    """Each index batch's examples, on ``device``, in order."""
    if isinstance(examples, Tensor):
        for index in index_batches:
            x = examples[index.start:index.stop] if isinstance(index, range) else examples[index]
            yield x.to(device, non_blocking=True)  # no copy where the examples live on the device
        return
    if not index_batches:
        return
    # one copy to the host for the whole list, not a device sync per batch
    if isinstance(index_batches[0], range):
        flat = [i for ix in index_batches for i in ix]
    else:
        flat = torch.cat([ix.reshape(-1) for ix in index_batches]).cpu().tolist()
    lists, at = [], 0
    for ix in index_batches:
        size = len(ix) if isinstance(ix, range) else ix.numel()
        lists.append(flat[at:at + size])
        at += size
    workers = examples.workers
    # A generator of its own: a DataLoader draws its workers' seed from one, and the global one
    # must stay as it is (dropout draws from it), so streaming changes nothing.
    loader = torch.utils.data.DataLoader(examples, batch_sampler=lists, num_workers=workers,
                                         pin_memory=device.type == "cuda", generator=torch.Generator(),
                                         prefetch_factor=PREFETCH if workers else None)
    for x in worker_batches(loader):
        yield x.to(device, non_blocking=True)
