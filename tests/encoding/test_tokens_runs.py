"""Token caches are resumable, deterministic and the same under torchrun, like pooled ones."""

import h5py
from test_encode_resume import kill_rerun_and_compare
from test_encode_torchrun import two_ranks_and_one_process

from encoding import cache


def assert_token_shards(out) -> None:
    meta = cache.read_metadata(out)
    assert meta["tokens"] == {"image_tokens": None} and meta["image_model"]["num_tokens"] == 1
    for shard in meta["shards"]:
        with h5py.File(out / shard["file"]) as f:
            assert all(key in f for key in ("images/tokens", "captions/tokens", "captions/token_mask"))


def test_kill_9_then_rerun_gives_the_uninterrupted_token_cache_byte_for_byte(tmp_path):
    kill_rerun_and_compare(tmp_path, "--tokens")  # same shard sha256 as an uninterrupted run: deterministic too
    assert_token_shards(tmp_path / "killed")


def test_torchrun_two_ranks_give_the_single_process_token_cache(tmp_path):
    two_ranks_and_one_process(tmp_path, "--tokens")
    assert_token_shards(tmp_path / "ranks")
