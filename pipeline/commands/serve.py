"""`xalign serve RUN`: a web page and JSON API that search a trained run's gallery by text or image.

`GET /` the page; `GET /api/search?q=TEXT&k=K&target=images|captions` and `POST /api/search` (multipart field
`image`, optional `k`, `target`) answer the list `xalign search --json` prints; `GET /image/<id>` an indexed
gallery image by id; `GET /api/info` the run, split and index. Bad requests get a 4xx and a JSON message.
It listens on 127.0.0.1 unless `--host` says otherwise (any other host makes the gallery reachable from the
network). The exact index of the split is built first when it is missing (as `xalign search` does).
"""

import argparse
import logging
from pathlib import Path

from encoding.errors import BadInput
from pipeline.search.searcher import Searcher
from pipeline.search.server import is_local, serve

log = logging.getLogger(f"xalign.{__name__}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign serve", description=__doc__)
    p.add_argument("run_dir", type=Path, help="a run directory of `xalign train` or `backbone-train`")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port (default 8000)")
    p.add_argument("--split", default="test", help="the split whose images are the gallery (default test)")
    p.add_argument("--cache", type=Path, help="the cache of the gallery (default: the run's own cache)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--threads", type=int, default=4, help="worker threads answering requests (default 4)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads < 1:
        raise BadInput(f"--threads {args.threads}: expected at least 1")
    if not is_local(args.host):
        log.warning("--host %s: the gallery and its search become reachable from the network", args.host)
    searcher = Searcher.open(args.run_dir, split=args.split, cache_dir=args.cache, device=args.device)
    serve(searcher, args.host, args.port, args.threads)
    return 0
