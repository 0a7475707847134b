"""What `xalign inspect DIR` prints: counts, dims, models, splits and skipped items, and every shard's sha256 check."""

from pathlib import Path

from encoding import cache, cache_checks
from encoding.errors import BadInput


def summary(cache_dir: Path, meta: dict) -> list[str]:
    dataset = meta.get("dataset") or {}
    lines = [
        f"cache       {cache_dir} ({'complete' if meta['complete'] else 'INCOMPLETE'}, format v{meta.get('version')})",
        f"dataset     {dataset.get('kind')} at {dataset.get('root')}",
        f"images      {meta.get('num_images')}   captions {meta.get('num_captions')}",
        f"shards      {len(meta['shards'])} of {meta['num_shards']} written",
    ]
    for side in ("image_model", "text_model"):
        m = meta[side]
        lines.append(f"{side:<11} {m.get('spec')}  dim {m['dim']}  {m.get('dtype')}  weights {m.get('weights')}")
        if m.get("prefix"):
            lines.append(f"{'':<11} text prefix {m['prefix']!r}")
    if cache_checks.has_tokens(meta):
        lines.append(token_summary(meta))
    if (Path(cache_dir) / cache.SPLITS).is_file():
        splits = cache.read_splits(cache_dir)
        counts = "  ".join(f"{k} {len(v)}" for k, v in splits.items() if isinstance(v, list))
        lines.append(f"splits      {splits.get('method')} (seed {splits.get('seed')}): {counts}")
    else:
        lines.append("splits      none (run `xalign split`)")
    skipped = meta.get("skipped") or []
    lines.append(f"skipped     {len(skipped)}")
    lines += [f"  {s.get('image_id')} {s.get('path')}: {s.get('reason')}" for s in skipped[:20] if isinstance(s, dict)]
    return lines


def token_summary(meta: dict) -> str:
    """`tokens      image 49 x 768 (grid 7x7)   text <= 77 x 512` for a token cache."""
    image, text, asked = meta["image_model"], meta["text_model"], meta.get("tokens") or {}
    grid = image.get("token_grid")
    shape = f"grid {grid[0]}x{grid[1]}" if grid else "no fixed grid"
    pooled = f", pooled to {asked['image_tokens']}" if asked.get("image_tokens") else ""
    return (
        f"{'tokens':<11} image {image['num_tokens']} x {image['token_dim']} ({shape}{pooled})   "
        f"text <= {text['max_tokens']} x {text['token_dim']}"
    )


def verify_shards(cache_dir: Path, meta: dict) -> tuple[list[str], list[str]]:
    """(shards whose sha256 differs from metadata, shards missing or not readable as HDF5), as messages."""
    corrupt, unreadable = [], []
    for shard in meta["shards"]:
        path = Path(cache_dir) / shard["file"]
        try:
            cache_checks.open_shard(path).close()
        except BadInput as err:
            unreadable.append(str(err))
            continue
        if cache_checks.sha256_of(path) != shard["sha256"]:
            corrupt.append(f"{path}: sha256 differs from metadata")
    return corrupt, unreadable


def report(cache_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """(lines to print: the summary, one `CORRUPT:` line per bad shard, the verified count; the shards whose
    hash differs; the shards missing or unreadable)."""
    meta = cache.read_metadata(cache_dir)
    corrupt, unreadable = verify_shards(cache_dir, meta)
    lines = summary(cache_dir, meta) + [f"CORRUPT: {line}" for line in unreadable + corrupt]
    verified = len(meta["shards"]) - len(corrupt) - len(unreadable)
    lines.append(f"shards      {verified}/{len(meta['shards'])} verified (sha256)")
    return lines, corrupt, unreadable
