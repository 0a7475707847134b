"""Content identities: a cache, a split and a config are named by sha256 digests of what they hold,
never by their paths (a moved cache keeps its fingerprint; a changed byte changes it).
"""

import hashlib
import json

SPLIT_LISTS = ("train", "val", "test", "tuning")


def sha256_json(value) -> str:
    """sha256 of `value` as canonical JSON (sorted keys, no spaces)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def model_identity(entry: dict) -> dict:
    """What identifies a backbone's embeddings: its metadata entry (spec, weights, dim, prefix, ...)
    without the storage dtype."""
    return {key: value for key, value in entry.items() if key != "dtype"}


def cache_fingerprint(meta: dict) -> str:
    """sha256 over a cache's image/text model identities and its ordered shard sha256 list."""
    return sha256_json(
        {
            "image_model": model_identity(meta["image_model"]),
            "text_model": model_identity(meta["text_model"]),
            "shards": [shard["sha256"] for shard in meta["shards"]],
        }
    )


def splits_fingerprint(splits: dict) -> str:
    """sha256 of a split's canonical id lists: train, val, test, tuning, each sorted."""
    return sha256_json({name: sorted(splits.get(name, [])) for name in SPLIT_LISTS})
