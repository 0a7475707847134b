"""`xalign search RUN QUERY [--image PATH] [-k 10] [--target images|captions] [--json] [--grid FILE]`: what a run
retrieves for your own words, or for an image.

A text QUERY goes through the cache's recorded text backbone (its prefix and normalisation) and the run's text
head; `--image PATH` through the image backbone and head. The run's index of `--split` (`RUN/index/<split>/`,
written by `xalign index`) answers; with none yet, the default one is built first. Scores are those `xalign
evaluate` ranks by (the cosine of the two embeddings; the match logit for runs that re-rank). Prints a ranked
table (rank, score, image id, path, first caption), or with `--json` the list of `{rank, score, id, path,
captions}`; `--grid FILE` also writes a PNG of the top images with their scores and captions.
"""

import argparse
import json
import textwrap
from pathlib import Path

from encoding.errors import BadInput
from pipeline.reporting.plots import search_grid
from pipeline.runs.files import check_output
from pipeline.search.searcher import MAX_UPLOAD_BYTES, Searcher, decode_image


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign search", description=__doc__)
    p.add_argument("run_dir", type=Path, help="a run directory of `xalign train` or `backbone-train`")
    p.add_argument("query", nargs="?", help="the text to search for (or give --image)")
    p.add_argument("--image", type=Path, help="an image file to search with instead of a text")
    p.add_argument("-k", type=int, default=10, help="how many results (default 10)")
    p.add_argument("--target", default="images", choices=("images", "captions"), help="what to retrieve")
    p.add_argument("--json", action="store_true", help="print the results as JSON")
    p.add_argument("--grid", type=Path, metavar="FILE", help="write a PNG of the top images")
    p.add_argument("--split", default="test", help="the indexed split (default test)")
    p.add_argument("--cache", type=Path, help="another cache of the run's backbones, as given to `xalign index`")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in RUN (best.pt or last.pt)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--allow-new-split", action="store_true", help="use a run on a split re-made since training")
    return p


def read_image(path: Path):
    """The image file at `path`, refused as an upload would be (`decode_image`)."""
    if not path.is_file():
        raise BadInput(f"--image {path}: no such file")
    if path.stat().st_size > MAX_UPLOAD_BYTES:
        raise BadInput(f"--image {path}: {path.stat().st_size:,} bytes; images up to {MAX_UPLOAD_BYTES >> 20} MB")
    return decode_image(path.read_bytes(), f"--image {path}")


def table(hits: list[dict]) -> str:
    """The ranked table: rank, score, image id, path, first caption."""
    rows = [("rank", "score", "id", "path", "caption")]
    for hit in hits:
        caption = textwrap.shorten(hit["captions"][0], 60, placeholder="…") if hit["captions"] else ""
        rows.append((str(hit["rank"]), f"{hit['score']:.4f}", hit["id"], hit["path"], caption))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    return "\n".join(f"{r[0]:>{w[0]}}  {r[1]:>{w[1]}}  {r[2]:<{w[2]}}  {r[3]:<{w[3]}}  {r[4]}".rstrip() for r in rows)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if (args.query is None) == (args.image is None):
        raise BadInput("search: give a text QUERY or --image PATH (one of them)")
    if args.grid is not None:
        check_output(args.grid, "--grid")
        if not args.grid.resolve().parent.is_dir():
            raise BadInput(f"--grid {args.grid}: its directory {args.grid.parent} does not exist")
    image = None if args.image is None else read_image(args.image)
    searcher = Searcher.open(args.run_dir, args.split, args.cache, args.device, args.checkpoint, args.allow_new_split)
    if image is None:
        hits = searcher.search_text(args.query, args.k, args.target)
    else:
        hits = searcher.search_image(image, args.k, args.target)
    print(json.dumps(hits, indent=2) if args.json else table(hits))
    if args.grid is not None:
        query = args.query if image is None else f"image {args.image.name}"
        search_grid(query, hits, args.grid)
        if not args.json:
            print(f"wrote {args.grid}")
    return 0
