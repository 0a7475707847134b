"""Epoch order and micro-batches of token training, the same whether the tokens are in memory or streamed.

An epoch visits the split in a chunked shuffle (`chunked_permutation`): runs of `CHUNK` consecutive
items (cache order, so a run is a contiguous range of a shard) in random order, shuffled again within
windows of `WINDOW` runs. In memory each micro-batch is gathered directly; streamed, a background
thread reads one window at a time from the shards (a few contiguous reads per window, no per-sample
Python), cuts it into micro-batches and queues `PREFETCH` of them ahead of the training step. Both
paths give the same batches, so a run gives the same weights either way.
"""

import queue
import threading
from collections.abc import Iterator

import torch

from pipeline.data.split_tensors import EpochSampler
from pipeline.data.token_source import TokenBatch, trimmed

CHUNK = 256  # items per contiguous run of the chunked shuffle
WINDOW = 8  # runs shuffled together (the read unit of streaming)
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


class ChunkedSampler(EpochSampler):
    """`EpochSampler` whose epochs follow `chunked_permutation` (readable as contiguous runs of the shards)."""

    def order(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = self.generator(epoch)
        if self.sampling == "caption":
            captions = chunked_permutation(len(self.caption_image_index), g).to(self.device)
            return self.caption_image_index[captions], captions
        rows = self.images_with_captions[chunked_permutation(len(self.images_with_captions), g).to(self.device)]
        pick = (torch.rand(len(rows), generator=g).to(self.device) * self.counts[rows]).long()
        return rows, self.caption_order[self.offsets[rows] + pick]


def gathered_batches(source, image_rows, caption_rows, batch_size: int, share: slice) -> Iterator[TokenBatch]:
    """Micro-batches gathered from an in-memory source: this rank's `share` of each global batch."""
    for first in range(0, len(image_rows) - batch_size + 1, batch_size):
        images, captions = (
            image_rows[first : first + batch_size][share],
            caption_rows[first : first + batch_size][share],
        )
        yield TokenBatch(source.images(images), *source.captions(captions), images)


def _concat_padded(parts: list[tuple]) -> tuple:
    """Concatenate (image, text, mask, rows) parts, padding captions to the longest part."""
    length = max(p[1].shape[1] for p in parts)
    pad = [torch.nn.functional.pad(p[1], (0, 0, 0, length - p[1].shape[1])) for p in parts]
    masks = [torch.nn.functional.pad(p[2], (0, length - p[2].shape[1])) for p in parts]
    return torch.cat([p[0] for p in parts]), torch.cat(pad), torch.cat(masks), torch.cat([p[3] for p in parts])


def window_batches(source, image_rows, caption_rows, batch_size: int, share: slice) -> Iterator[TokenBatch]:
    """Micro-batches read a window (CHUNK × WINDOW pairs) at a time from a streamed source."""
    span, pending = CHUNK * WINDOW, []
    usable = len(image_rows) - len(image_rows) % batch_size
    for first in range(0, usable, span):
        images, captions = (
            image_rows[first : min(first + span, usable)],
            caption_rows[first : min(first + span, usable)],
        )
        pending.append((source.images(images), *source.captions(captions), images))
        image, text, mask, rows = _concat_padded(pending)
        whole = len(rows) - len(rows) % batch_size
        for start in range(0, whole, batch_size):
            batch = slice(start, start + batch_size)
            yield TokenBatch(image[batch][share], *trimmed(text[batch][share], mask[batch][share]), rows[batch][share])
        pending = [(image[whole:], text[whole:], mask[whole:], rows[whole:])] if whole < len(rows) else []


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

    thread = threading.Thread(target=produce, daemon=True, name="token-prefetch")
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


def epoch_batches(source, image_rows, caption_rows, batch_size: int, share: slice) -> Iterator[TokenBatch]:
    """An epoch's micro-batches (this rank's `share` of each global batch) from either kind of source."""
    rows = image_rows.cpu(), caption_rows.cpu()
    if source.streamed:
        return prefetched(window_batches(source, *rows, batch_size, share))
    return gathered_batches(source, *rows, batch_size, share)
