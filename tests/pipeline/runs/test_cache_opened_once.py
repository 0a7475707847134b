"""One `xalign train` opens its cache once: metadata.json and splits.json read once, each shard hashed once, the
cache fingerprint computed once."""

import builtins
import collections
import sys
from pathlib import Path

from conftest import write_head_config

from encoding import fingerprints
from pipeline import cli


def count_cache_reads(monkeypatch) -> collections.Counter:
    """A counter of file reads by name (`open` for reading: metadata.json, splits.json, shard-*.h5 hashed; h5py
    reads shards without `open`) and of `cache_fingerprint` calls, wherever the function was imported."""
    counts = collections.Counter()
    real_open, real_fingerprint = builtins.open, fingerprints.cache_fingerprint

    def counting_open(file, mode="r", *args, **kwargs):
        if isinstance(file, (str, Path)) and not set(mode) & set("wax+"):
            counts[Path(file).name] += 1
        return real_open(file, mode, *args, **kwargs)

    def counting_fingerprint(meta):
        counts["cache_fingerprint"] += 1
        return real_fingerprint(meta)

    monkeypatch.setattr(builtins, "open", counting_open)
    for name, module in list(sys.modules.items()):
        if (
            name.split(".")[0] in ("encoding", "pipeline")
            and getattr(module, "cache_fingerprint", None) is real_fingerprint
        ):
            monkeypatch.setattr(module, "cache_fingerprint", counting_fingerprint)
    return counts


def test_one_train_reads_the_metadata_once_and_hashes_each_shard_once(synthetic_cache, tmp_path, monkeypatch):
    config = write_head_config(tmp_path, synthetic_cache)
    monkeypatch.chdir(tmp_path)
    counts = count_cache_reads(monkeypatch)
    assert cli.main(["train", str(config)]) == 0
    shards = sorted(path.name for path in synthetic_cache.glob("shard-*.h5"))
    once = ["metadata.json", "splits.json", *shards, "cache_fingerprint"]
    assert len(shards) == 3 and {name: counts[name] for name in once} == dict.fromkeys(once, 1)
