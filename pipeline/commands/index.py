"""`xalign index RUN [--split test] [--index default|exact|auto|FACTORY] [--max-memory SIZE] [--force]`: the faiss
indexes a run is searched with, under `RUN/index/<split>/` (`pipeline.search.gallery`).

The split's images and captions are embedded through the run (as `xalign evaluate` embeds them) and indexed,
one index each (`--target images|captions` of `xalign search`). `--index default` is exact search up to
`EXACT_UP_TO` vectors and `auto` beyond; `exact` is inner product over every vector; `auto` picks an approximate
index that fits `--max-memory` and tunes its search parameter to recall@10 >= 0.95 against exact search on the
other side's embeddings, which it also reports; any other value is a faiss factory string, taken as is.
An index that exists is kept when it is current and was built as asked; one built otherwise, or stale (the
run's config or checkpoint, its cache or its split changed since), is refused; `--force` rebuilds it.
`--cache DIR` indexes another cache of the run's backbones, under `RUN/index/<cache name>-<split>/`.
"""

import argparse
from pathlib import Path

from encoding.errors import BadInput
from pipeline.evaluation.evaluate import run_on_split
from pipeline.search.faiss_index import parse_memory
from pipeline.search.gallery import build_gallery, current_gallery, gallery_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign index", description=__doc__)
    p.add_argument("run_dir", type=Path, help="a run directory of `xalign train` or `backbone-train`")
    p.add_argument("--split", default="test", help="a split of splits.json, or 'all' (default test)")
    p.add_argument("--cache", type=Path, help="another cache of the run's backbones (default: the run's own)")
    p.add_argument("--index", default="default", help="default, exact, auto, or a faiss factory string")
    p.add_argument("--max-memory", help="memory budget of each index for auto, e.g. 4G or 512M")
    p.add_argument("--force", action="store_true", help="rebuild an index that exists")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in RUN (best.pt or last.pt)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--allow-new-split", action="store_true", help="use a run on a split re-made since training")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip hashing the cache's shards")
    return p


def summary(gallery) -> str:
    """One line per index: vectors, factory, search parameters, recall@10, size, build time."""
    lines = []
    for side in ("images", "captions"):
        info = gallery.record[side]
        params = " ".join(f"{k}={v}" for k, v in info["search_params"].items()) or "-"
        recall = "exact" if info["recall_at_10"] is None else f"recall@10 {info['recall_at_10']:.3f}"
        lines.append(
            f"{side:<8}  {info['vectors']:>10,} x {info['dim']:<5} {info['factory']:<24} {params:<12} {recall:<16} "
            f"{info['index_mb']:>9.1f} MB  {info['build_s']:>7.1f} s"
        )
    return "\n".join(lines)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.max_memory is not None:
        args.max_memory = parse_memory(args.max_memory)
    opened = run_on_split(
        args.run_dir, args.split, args.cache, args.device, args.checkpoint, args.allow_new_split, args.verify
    )
    directory = gallery_dir(args.run_dir, args.split, args.cache)
    existing = None if args.force else current_gallery(directory, opened, args.split, "--force rebuilds it")
    if existing is not None:
        asked = {"index": args.index, "max_memory": args.max_memory}
        if existing.record.get("requested") != asked:
            raise BadInput(
                f"{directory}: an index built with {existing.record.get('requested')} exists; "
                f"--force replaces it with --index {args.index}"
            )
        print(f"{directory}: up to date\n{summary(existing)}")
        return 0
    gallery = build_gallery(opened, directory, args.split, args.index, args.max_memory)
    print(f"{summary(gallery)}\nwrote {directory}")
    return 0
