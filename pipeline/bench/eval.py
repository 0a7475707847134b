"""`xalign bench eval [--images N --captions M --dim D]`: chunked retrieval vs the bare similarity matmul.

With no sizes it runs 5k x 25k and 25k x 125k. Each size runs in a fresh subprocess, so its peak
resident set size (`ru_maxrss`) belongs to that size alone. In it, after a warm-up on a slice, the
full `retrieval_metrics` (both directions, all ranks) and the bare matmul of the same N x M scores
(tile by tile into one reused buffer; also as one full matrix when that fits in 2 GB) run in turns,
`--repeats` times; each time is the best of its repeats and `matmul_s` is the faster baseline.
Goals: chunked_vs_matmul <= 1.5, and working memory (peak RSS minus RSS with the inputs loaded)
flat in the gallery size. Prints a table, then one JSON object last on stdout.
"""

import argparse
import json
import resource
import sys

import torch

from encoding.errors import BadInput
from encoding.runtime import resolve_device, timed
from pipeline.bench.arguments import require_positive
from pipeline.bench.fresh_process import fresh_process_result
from pipeline.evaluation import metrics

DEFAULT_SIZES = ((5_000, 25_000), (25_000, 125_000))
FULL_MATRIX_LIMIT = 2 << 30  # bytes: the one-matrix baseline runs only below this


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def tiled_matmul(image: torch.Tensor, text: torch.Tensor, buffer: torch.Tensor, rows: int, cols: int) -> None:
    """Every (N, M) score once, on the same tiles as the chunked metrics, into one reused flat buffer."""
    for r in range(0, len(image), rows):
        for c in range(0, len(text), cols):
            block, captions = image[r : r + rows], text[c : c + cols]
            torch.matmul(block, captions.T, out=buffer[: len(block) * len(captions)].view(len(block), len(captions)))


def measure(num_images: int, num_captions: int, dim: int, device: torch.device, repeats: int) -> dict:
    """One size, in this process: times, peak RSS and the RSS with the inputs loaded."""
    g = torch.Generator().manual_seed(0)
    image, text = torch.randn(num_images, dim, generator=g), torch.randn(num_captions, dim, generator=g)
    image, text = (
        image.div_(image.norm(dim=1, keepdim=True)).to(device),
        text.div_(text.norm(dim=1, keepdim=True)).to(device),
    )
    index = (torch.arange(num_captions) * num_images // num_captions).to(device)
    rss_inputs = rss_mb()
    rows, cols = metrics.tile_shape(num_images, num_captions, device)
    buffer = torch.empty(rows * cols, device=device)
    warm = min(num_images, rows), min(num_captions, 4 * cols)
    metrics.retrieval_metrics(image[: warm[0]], text[: warm[1]], index[: warm[1]] % warm[0])
    tiled_matmul(image[: warm[0]], text[: warm[1]], buffer, rows, cols)
    chunked, tiled = [], []
    for _ in range(repeats):
        chunked.append(timed(lambda: metrics.retrieval_metrics(image, text, index), device))
        tiled.append(timed(lambda: tiled_matmul(image, text, buffer, rows, cols), device))
    peak = rss_mb()
    full = None
    if num_images * num_captions * 4 <= FULL_MATRIX_LIMIT:
        full = min(timed(lambda: image @ text.T, device) for _ in range(repeats))
    matmul_s = min([min(tiled)] + ([full] if full is not None else []))
    return {
        "images": num_images,
        "captions": num_captions,
        "dim": dim,
        "chunked_s": min(chunked),
        "matmul_s": matmul_s,
        "matmul_tiled_s": min(tiled),
        "matmul_full_s": full,
        "chunked_vs_matmul": min(chunked) / matmul_s,
        "peak_rss_mb": peak,
        "rss_with_inputs_mb": rss_inputs,
        "working_mb": peak - rss_inputs,
        "inputs_mb": (num_images + num_captions) * dim * 4 / 2**20,
        "tile": [rows, cols],
    }


def run_size(num_images: int, num_captions: int, args) -> dict:
    """`measure` in a fresh subprocess, so that its peak RSS is its own."""
    argv = [sys.executable, "-m", "pipeline.bench.eval", "--worker", "--images", str(num_images)]
    argv += ["--captions", str(num_captions), "--dim", str(args.dim), "--device", args.device]
    argv += ["--repeats", str(args.repeats)] + (["--threads", str(args.threads)] if args.threads else [])
    return fresh_process_result(argv, f"bench eval worker for {num_images} x {num_captions}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign bench eval", description=__doc__)
    p.add_argument("--images", type=int, help="gallery images (default: 5000 and 25000)")
    p.add_argument("--captions", type=int, help="captions (default: 5 per image)")
    p.add_argument("--dim", type=int, default=512, help="embedding dim (default 512)")
    p.add_argument("--device", default="cpu", help="cpu, cuda[:N] or auto")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per loop; the best counts")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.captions is not None and args.images is None:
        raise BadInput("--captions needs --images")
    require_positive(args, ("images", "captions", "dim", "repeats", "threads"))
    device = resolve_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.worker:
        print(json.dumps(measure(args.images, args.captions, args.dim, device, args.repeats)))
        return 0
    sizes = DEFAULT_SIZES if args.images is None else ((args.images, args.captions or 5 * args.images),)
    results = [run_size(n, m, args) for n, m in sizes]
    print("| images | captions | chunked s | matmul s | ratio | peak RSS MB | working MB |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['images']} | {r['captions']} | {r['chunked_s']:.2f} | {r['matmul_s']:.2f} | "
            f"{r['chunked_vs_matmul']:.2f} | {r['peak_rss_mb']:.0f} | {r['working_mb']:.0f} |"
        )
    largest = results[-1]
    summary = {**largest, "device": str(device), "threads": torch.get_num_threads(), "sizes": results}
    summary["working_mb_growth"] = largest["working_mb"] / max(results[0]["working_mb"], 1.0)
    summary["rss_method"] = "ru_maxrss of a fresh subprocess per size, minus its ru_maxrss once the inputs exist"
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
