"""Epoch order and micro-batches of head training, the same whether the inputs are in memory or streamed.

An epoch visits the split in a chunked shuffle (`chunked_permutation`): runs of `chunk` consecutive
items (cache order, so a run is a contiguous range of a shard) in random order, shuffled again within
windows of `window` runs. Token heads use runs of `CHUNK` over windows of `WINDOW` runs (a token pair
is tens of KB); pooled heads runs of `POOLED_CHUNK` over windows of at least `POOLED_WINDOW_ITEMS`
items and 4 global batches (a pooled pair is about a KB, so a window can mix far more of the split).

A source gives a split's inputs by row: `read(image_rows, caption_rows)` → a batch (`TokenBatch`,
`PooledBatch`), or from the shards a window of slabs (`TokenWindow`, `PooledWindow`), whose `part`
gathers a micro-batch (batches also join: `cat`). In memory each micro-batch is gathered
directly; streamed, a background thread reads one window at a time from the shards (a few contiguous
reads per window, no per-sample Python), only the rows of this rank's share of each global batch, cuts
them into micro-batches and queues `PREFETCH` of them ahead of the training step. Both paths give the
same batches, so a run gives the same weights either way.
"""

import queue
import threading
from collections.abc import Iterator

import torch

from pipeline.data.split_tensors import EpochSampler

CHUNK = 256  # token heads: items per contiguous run of the chunked shuffle
WINDOW = 8  # token heads: runs shuffled together (the read unit of streaming)
POOLED_CHUNK = 32  # pooled heads: items per run
POOLED_WINDOW_ITEMS = 65536  # pooled heads: at least this many items shuffled together (and 4 global batches)
PREFETCH = 4  # micro-batches queued ahead of the training step


def chunked_permutation(n: int, generator: torch.Generator, chunk: int = CHUNK, window: int = WINDOW) -> torch.Tensor:
    """(n,) a permutation of range(n): chunks of `chunk` consecutive indices in random order, then shuffled
    within each window of `window` chunks."""
    chunks = torch.randperm(-(-n // chunk), generator=generator)
    starts = chunks * chunk
    lengths = torch.clamp(n - starts, max=chunk)
    order = torch.repeat_interleave(starts, lengths) + (
        torch.arange(int(lengths.sum())) - torch.repeat_interleave(torch.cumsum(lengths, 0) - lengths, lengths)
    )
    span = chunk * window
    for first in range(0, n, span):
        block = order[first : first + span]
        order[first : first + span] = block[torch.randperm(len(block), generator=generator)]
    return order


def pooled_window(batch_size: int) -> int:
    """Runs per shuffle window of pooled heads at global batch `batch_size`."""
    return -(-max(POOLED_WINDOW_ITEMS, 4 * batch_size) // POOLED_CHUNK)


class ChunkedSampler(EpochSampler):
    """`EpochSampler` whose epochs follow `chunked_permutation` (readable as contiguous runs of the shards):
    runs of `chunk` items, `window` runs shuffled together."""

    def __init__(self, *args, chunk: int = CHUNK, window: int = WINDOW, **kwargs):
        super().__init__(*args, **kwargs)
        self.chunk, self.window = chunk, window

    @property
    def window_items(self) -> int:
        """Items of one shuffle window: the read unit of streaming."""
        return self.chunk * self.window

    def permutation(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return chunked_permutation(n, generator, self.chunk, self.window).to(self.device)

    def order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.generator(epoch)
        if self.sampling == "caption":
            captions = self.permutation(len(self.caption_image_index), g)
            return self.caption_image_index[captions], captions
        rows = self.images_with_captions[self.permutation(len(self.images_with_captions), g)]
        pick = (torch.rand(len(rows), generator=g).to(self.device) * self.counts[rows]).long()
        return rows, self.caption_order[self.offsets[rows] + pick]


def gathered_batches(source, image_rows, caption_rows, batch_size: int, share: slice) -> Iterator:
    """Micro-batches gathered from an in-memory source: this rank's `share` of each global batch."""
    for first in range(0, len(image_rows) - batch_size + 1, batch_size):
        batch = slice(first, first + batch_size)
        yield source.read(image_rows[batch][share], caption_rows[batch][share])


def window_batches(source, image_rows, caption_rows, batch_size: int, share: slice, span: int) -> Iterator:
    """Micro-batches read a shuffle window (`span` items) at a time from a streamed source: only the rows of this
    rank's `share` of each global batch are read. A micro-batch straddling two windows joins the first's tail
    to the second's head (the windows themselves are not copied)."""
    usable = len(image_rows) - len(image_rows) % batch_size
    mine = torch.zeros(batch_size, dtype=torch.bool)
    mine[share] = True
    width, pending = int(mine.sum()), None
    for first in range(0, usable, span):
        positions = torch.arange(first, min(first + span, usable))
        picked = positions[mine[positions % batch_size]]  # in order: `width` consecutive rows per global batch
        batch = source.read(image_rows[picked], caption_rows[picked])
        start = 0
        if pending is not None:  # completed from this window's head (or, in a window too short, kept growing)
            start = min(width - len(pending), len(batch))
            pending = type(pending).cat([pending, batch.part(slice(0, start))])
            if len(pending) == width:
                yield pending
                pending = None
        whole = start + (len(batch) - start) // width * width
        for at in range(start, whole, width):
            yield batch.part(slice(at, at + width))
        if whole < len(batch):
            pending = batch.part(slice(whole, len(batch)))
        del batch  # freed before the next window is read: one window in memory at a time


def prefetched(batches: Iterator, depth: int = PREFETCH) -> Iterator:
    """Run the `batches` iterator in a background thread, `depth` items ahead; errors re-raise here.
    Closing the returned generator stops the thread."""
    items: queue.Queue = queue.Queue(maxsize=depth)
    stop, done = threading.Event(), object()

    def offer(item) -> bool:
        """Queue `item` unless the consumer has stopped; False once it has."""
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in batches:
                if not offer(item):
                    return
            offer(done)
        except BaseException as err:  # handed to the consumer, which re-raises it
            offer(err)

    thread = threading.Thread(target=produce, daemon=True, name="input-prefetch")
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while thread.is_alive():  # free a producer waiting on a full queue at once
            try:
                items.get_nowait()
            except queue.Empty:
                thread.join(0.01)


def epoch_batches(source, image_rows, caption_rows, batch_size: int, share: slice, span: int) -> Iterator:
    """An epoch's micro-batches (this rank's `share` of each global batch) from either kind of source;
    `span`: the items of one shuffle window (the streamed read unit)."""
    rows = image_rows.cpu(), caption_rows.cpu()
    if source.streamed:
        return prefetched(window_batches(source, *rows, batch_size, share, span))
    return gathered_batches(source, *rows, batch_size, share)
