"""Epoch batches: the chunked epoch order, and the same micro-batches in memory and streamed (tokens, pooled)."""

import threading

import pytest
import torch

from pipeline.data.epoch_stream import (
    CHUNK,
    WINDOW,
    ChunkedSampler,
    chunked_permutation,
    epoch_batches,
    gathered_batches,
    pooled_window,
    prefetched,
    window_batches,
)
from pipeline.data.pooled_source import PooledBatch, PooledWindow
from pipeline.data.token_source import InMemoryTokens

SPAN = CHUNK * WINDOW


def toy_tokens(images=40, captions_per_image=3, tokens=4, dim=3, max_len=6, seed=0) -> InMemoryTokens:
    g = torch.Generator().manual_seed(seed)
    m = images * captions_per_image
    lengths = torch.randint(1, max_len + 1, (m,), generator=g)
    mask = torch.arange(max_len)[None, :] < lengths[:, None]
    text = torch.randn(m, max_len, dim, generator=g).half() * mask[..., None]
    return InMemoryTokens(torch.randn(images, tokens, dim, generator=g).half(), text, mask)


class Streamed(InMemoryTokens):
    """The same tokens behind the streamed interface (read by the window assembler), counting reads."""

    streamed = True

    def __init__(self, source: InMemoryTokens):
        super().__init__(source.image, source.text, source.text_mask)
        self.reads = 0

    def images(self, rows):
        self.reads += 1
        self.rows_read = getattr(self, "rows_read", 0) + len(rows)
        return super().images(rows)


class Vectors:
    """Pooled vectors behind the source interface, in memory or 'streamed'."""

    def __init__(self, streamed: bool, images=40, captions=120, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.image, self.text, self.streamed = (
            torch.randn(images, 5, generator=g),
            torch.randn(captions, 3, generator=g),
            streamed,
        )

    def read(self, image_rows, caption_rows):
        if self.streamed:  # slabs of every row, read in cache order, gathered by `part`
            return PooledWindow(
                self.image.numpy(), image_rows.numpy(), self.text.numpy(), caption_rows.numpy(), image_rows
            )
        return PooledBatch(self.image[image_rows], self.text[caption_rows], image_rows)


def test_chunked_permutation_is_a_permutation_of_shuffled_runs():
    g = torch.Generator().manual_seed(0)
    order = chunked_permutation(1000, g, chunk=10, window=4)
    assert sorted(order.tolist()) == list(range(1000))
    windows = order.view(-1, 40)
    for window in windows:  # each window holds exactly 4 whole runs of 10 consecutive indices
        runs = {int(i) // 10 for i in window}
        assert len(runs) == 4 and sorted(window.tolist()) == [r * 10 + j for r in sorted(runs) for j in range(10)]
    same = chunked_permutation(1000, torch.Generator().manual_seed(0), chunk=10, window=4)
    assert torch.equal(order, same)


def test_chunked_sampler_visits_every_image_once_with_one_of_its_captions():
    index = torch.arange(40).repeat_interleave(3)
    sampler = ChunkedSampler(index, 40, "image", seed=1, device=torch.device("cpu"))
    rows, captions = sampler.order(0)
    assert sorted(rows.tolist()) == list(range(40))
    assert torch.equal(index[captions], rows)
    assert not torch.equal(rows, sampler.order(1)[0])


@pytest.mark.parametrize("batch_size", [1, 7, 32, 100])
def test_streamed_batches_equal_gathered_batches(batch_size):
    source = toy_tokens()
    index = torch.arange(40).repeat_interleave(3)
    rows, captions = ChunkedSampler(index, 40, "caption", seed=0, device=torch.device("cpu")).order(0)
    share = slice(0, batch_size)
    gathered = list(gathered_batches(source, rows, captions, batch_size, share))
    streamed = list(window_batches(Streamed(source), rows, captions, batch_size, share, SPAN))
    assert len(gathered) == len(streamed) == len(rows) // batch_size
    for a, b in zip(gathered, streamed):
        assert torch.equal(a.image, b.image) and torch.equal(a.image_rows, b.image_rows)
        assert torch.equal(a.text, b.text) and torch.equal(a.text_mask, b.text_mask)
        assert a.text.shape[1] == int(a.text_mask.sum(1).max())  # trimmed to the batch's longest caption


@pytest.mark.parametrize("span", [8, 12, 40])
def test_a_rank_reads_and_takes_only_its_share_of_each_global_batch(span):
    source = toy_tokens()
    rows, captions = torch.arange(40), torch.arange(40) * 3
    whole = list(gathered_batches(source, rows, captions, 8, slice(0, 8)))
    streamed = Streamed(source)
    second = list(window_batches(streamed, rows, captions, 8, slice(4, 8), span))
    assert len(second) == 5 and all(torch.equal(w.image[4:], s.image) for w, s in zip(whole, second))
    assert streamed.rows_read == 20  # half of the epoch's rows: the other rank's are never read


@pytest.mark.parametrize("batch_size, share", [(16, slice(0, 16)), (16, slice(8, 16)), (50, slice(0, 25))])
def test_pooled_streamed_batches_equal_gathered_batches(batch_size, share):
    index = torch.arange(40).repeat_interleave(3)
    sampler = ChunkedSampler(index, 40, "caption", seed=3, device=torch.device("cpu"), chunk=4, window=pooled_window(8))
    rows, captions = sampler.order(0)
    gathered = list(gathered_batches(Vectors(False), rows, captions, batch_size, share))
    streamed = list(epoch_batches(Vectors(True), rows, captions, batch_size, share, span=24))
    assert len(gathered) == len(streamed) == 120 // batch_size
    for a, b in zip(gathered, streamed):
        assert torch.equal(a.image, b.image) and torch.equal(a.text, b.text) and torch.equal(a.image_rows, b.image_rows)


def test_streaming_reads_a_window_at_a_time_in_a_background_thread():
    source = Streamed(toy_tokens(images=400, captions_per_image=1))
    rows = torch.arange(400)
    batches = list(epoch_batches(source, rows, rows, 16, slice(0, 16), SPAN))
    assert len(batches) == 25
    assert source.reads == 1  # 400 pairs fit in one window of CHUNK × WINDOW


def test_prefetched_reraises_errors_and_stops_its_thread_when_closed():
    def failing():
        yield 1
        raise ValueError("broken shard")

    with pytest.raises(ValueError, match="broken shard"):
        list(prefetched(failing()))
    endless = prefetched(iter(range(10**9)))
    assert next(endless) == 0
    endless.close()
    assert not any(t.name == "input-prefetch" and t.is_alive() for t in threading.enumerate())
