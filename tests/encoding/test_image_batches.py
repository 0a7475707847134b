"""The image side of the encode loop: shard plans, batch collation with failures, pinned-memory hook."""

import torch
from torch.utils.data._utils.pin_memory import pin_memory

from encoding.image_batches import DecodedImage, ImageBatch, ShardPlan, collate


def test_batches_never_cross_a_shard_boundary():
    plan = ShardPlan(shard_size=5, batch_size=3)
    assert plan.num_shards(12) == 3 and plan.shard_records(2, 12) == range(10, 12)
    assert plan.batches([0, 2], 12) == [[0, 1, 2], [3, 4], [10, 11]]
    assert plan.batches([1], 7) == [[5, 6]]


def test_a_shard_never_mixes_two_groups():
    plan = ShardPlan(shard_size=3, batch_size=2, groups=(4, 0, 2))  # e.g. three tars, the second empty
    assert plan.bounds(6) == [range(0, 3), range(3, 4), range(4, 6)]
    assert plan.batches([0, 2], 6) == [[0, 1], [2], [4, 5]]
    shard_of = plan.shard_of(6)
    assert [shard_of(i) for i in range(6)] == [0, 0, 0, 1, 2, 2]


def test_collate_stacks_the_decoded_and_lists_the_failures():
    items = [
        DecodedImage(4, torch.ones(3, 2, 2), "a"),
        DecodedImage(5, None, None, "OSError: truncated"),
        DecodedImage(6, torch.zeros(3, 2, 2), "b"),
    ]
    batch = collate(items)
    assert batch.indices == [4, 5, 6] and batch.kept == [4, 6] and batch.sha1s == ["a", "b"]
    assert batch.pixels.shape == (2, 3, 2, 2) and batch.failures == [(5, "OSError: truncated")]
    empty = collate([DecodedImage(7, None, None, "missing")])
    assert empty.pixels is None and empty.kept == [] and empty.failures == [(7, "missing")]


class FakePixels:
    """Stands in for a tensor: records that the DataLoader's pinning reached it (pinning needs a GPU)."""

    pinned = False

    def pin_memory(self):
        pinned = FakePixels()
        pinned.pinned = True
        return pinned


def test_the_dataloader_pins_a_batchs_pixels():
    batch = ImageBatch(indices=[0], kept=[0], pixels=FakePixels(), sha1s=["a"], failures=[])
    assert pin_memory(batch).pixels.pinned and not batch.pixels.pinned
    as_dict = ImageBatch(indices=[0], kept=[0], pixels={"pixel_values": FakePixels()}, sha1s=["a"], failures=[])
    assert pin_memory(as_dict).pixels["pixel_values"].pinned
