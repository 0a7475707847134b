"""`xalign split`: image-level, leakage-free train/val/test/tuning splits written to `splits.json`.

Every caption follows its image. Images with identical decoded pixels (duplicates under different
ids, as COCO and Flickr30k have) form one group and always land in the same split. `--tuning N`
is a random subset of N *images* of train (all their captions come with them).
"""

import argparse
import sys
from pathlib import Path

from encoding import cache
from encoding.errors import BadInput
from encoding.split import split_cache, verify


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign split", description=__doc__)
    p.add_argument("cache", type=Path)
    p.add_argument("--val", type=float, default=0.1, help="fraction (< 1) or number of images")
    p.add_argument("--test", type=float, default=0.1, help="fraction (< 1) or number of images")
    p.add_argument("--tuning", type=int, default=0, help="images of train in the tuning subset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--predefined", action="store_true", help="use the dataset's own split")
    p.add_argument("--force", action="store_true", help="replace an existing splits.json")
    p.add_argument("--verify", action="store_true", help="check splits.json; exit 1 listing leaks")
    return p


WRITE_OPTIONS = ("val", "test", "tuning", "seed", "predefined", "force")  # options of writing a split, not of --verify


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ignored = [f"--{name}" for name in WRITE_OPTIONS if getattr(args, name) != parser.get_default(name)]
    if args.verify and ignored:
        raise BadInput(f"--verify checks the existing splits.json; {', '.join(ignored)} would have no effect")
    if not args.verify:
        split_cache(args.cache, args.val, args.test, args.tuning, args.seed, args.predefined, args.force)
        return 0
    problems = verify(args.cache)
    for problem in problems:
        print(f"LEAK: {problem}", file=sys.stderr)
    print(f"{args.cache / cache.SPLITS}: {'leak-free' if not problems else f'{len(problems)} problems'}")
    return 1 if problems else 0
