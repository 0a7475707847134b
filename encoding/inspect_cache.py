"""What `xalign inspect DIR` prints: counts, dims, models, splits and skipped items, and every shard's sha256 check."""

import json
from pathlib import Path

from encoding import cache


def summary(cache_dir: Path, meta: dict) -> list[str]:
    lines = [
        f"cache       {cache_dir} ({'complete' if meta['complete'] else 'INCOMPLETE'}, format v{meta['version']})",
        f"dataset     {meta['dataset']['kind']} at {meta['dataset']['root']}",
        f"images      {meta['num_images']}   captions {meta['num_captions']}",
        f"shards      {len(meta['shards'])} of {meta['num_shards']} written",
    ]
    for side in ("image_model", "text_model"):
        m = meta[side]
        lines.append(f"{side:<11} {m['spec']}  dim {m['dim']}  {m['dtype']}  weights {m['weights']}")
        if m.get("prefix"):
            lines.append(f"{'':<11} text prefix {m['prefix']!r}")
    splits_path = Path(cache_dir) / cache.SPLITS
    if splits_path.is_file():
        splits = json.loads(splits_path.read_text())
        counts = "  ".join(f"{k} {len(v)}" for k, v in splits.items() if isinstance(v, list))
        lines.append(f"splits      {splits['method']} (seed {splits['seed']}): {counts}")
    else:
        lines.append("splits      none (run `xalign split`)")
    lines.append(f"skipped     {len(meta['skipped'])}")
    lines += [f"  {s['image_id']} {s['path']}: {s['reason']}" for s in meta["skipped"][:20]]
    return lines


def verify_shards(cache_dir: Path, meta: dict) -> list[str]:
    """Shards whose file is missing or whose sha256 differs from metadata."""
    bad = []
    for shard in meta["shards"]:
        path = Path(cache_dir) / shard["file"]
        if not path.is_file():
            bad.append(f"{path}: missing")
        elif cache.sha256_of(path) != shard["sha256"]:
            bad.append(f"{path}: sha256 differs from metadata")
    return bad


def report(cache_dir: Path) -> tuple[list[str], list[str]]:
    """(lines to print: the summary, one `CORRUPT:` line per bad shard, the verified count; the bad shards)."""
    meta = cache.read_metadata(cache_dir)
    bad = verify_shards(cache_dir, meta)
    lines = summary(cache_dir, meta) + [f"CORRUPT: {line}" for line in bad]
    lines.append(f"shards      {len(meta['shards']) - len(bad)}/{len(meta['shards'])} verified (sha256)")
    return lines, bad
