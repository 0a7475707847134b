"""`xalign bench import [--rows N --dim-image D --dim-text D --shard-size S]`: rows/s and peak memory of
`xalign import --format arrays` from `.npy` files.

Writes N synthetic pairs (`--captions-per-image` rows per image, 5 as in COCO; unit float32 vectors, the rows of
one image sharing its vector) as `img.npy`, `txt.npy` and `pairs.parquet` in a temporary directory under
`--dir`, chunk by chunk, so that generation itself holds one chunk. The import (`encoding.imports.writer`,
checking pass and shard writing, float16 shards) then runs in a fresh subprocess, whose peak resident set size
(`ru_maxrss`) is its own: it must stay flat as N grows. Prints a table, then one JSON object last on stdout:
rows, dims, seconds, rows_per_s, peak_rss_mb, input_bytes, output_bytes, shards.
"""

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from pipeline.bench.arguments import require_positive
from pipeline.bench.fresh_process import fresh_process_result

CHUNK_ROWS = 100_000


def _npy_writer(path: Path, rows: int, dim: int):
    """An open file with a float32 (rows, dim) `.npy` header written; the caller appends the rows' bytes."""
    file = open(path, "wb")
    np.lib.format.write_array_header_2_0(file, {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)})
    return file


def _unit(rng, rows: int, dim: int) -> np.ndarray:
    x = rng.standard_normal((rows, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def generate(folder: Path, rows: int, dim_image: int, dim_text: int, per_image: int) -> dict:
    """Write the three input files chunk by chunk (each chunk a whole number of images) → their paths."""
    files = {"images": folder / "img.npy", "texts": folder / "txt.npy", "pairs": folder / "pairs.parquet"}
    rng = np.random.default_rng(0)
    schema = pa.schema([("image_id", pa.string()), ("caption", pa.string())])
    chunk = max(per_image, CHUNK_ROWS // per_image * per_image)
    with (
        _npy_writer(files["images"], rows, dim_image) as images,
        _npy_writer(files["texts"], rows, dim_text) as texts,
        pq.ParquetWriter(files["pairs"], schema) as pairs,
    ):
        for start in tqdm(range(0, rows, chunk), desc="write inputs", unit="chunk", disable=None):
            n = min(chunk, rows - start)
            first = start // per_image
            owners = np.arange(start, start + n) // per_image
            images.write(np.repeat(_unit(rng, -(-n // per_image), dim_image), per_image, axis=0)[:n].tobytes())
            texts.write(_unit(rng, n, dim_text).tobytes())
            ids = [f"img{k:09d}" for k in owners]
            captions = [
                f"a photo, caption {r % per_image} of image {first + (r - start) // per_image}"
                for r in range(start, start + n)
            ]
            pairs.write_table(pa.table({"image_id": ids, "caption": captions}, schema=schema))
    return files


def measure(folder: Path, shard_size: int) -> dict:
    """The import of `folder`'s files into `folder/cache`, in this process: seconds and peak RSS."""
    from encoding.imports.writer import ImportRequest, import_cache

    files = {name: folder / name for name in ("img.npy", "txt.npy", "pairs.parquet")}
    request = ImportRequest(
        format="arrays",
        out=folder / "cache",
        image_model="bench:image",
        text_model="bench:text",
        images=files["img.npy"],
        texts=files["txt.npy"],
        pairs=files["pairs.parquet"],
        shard_size=shard_size,
    )
    start = time.perf_counter()
    meta = import_cache(request)
    seconds = time.perf_counter() - start
    return {
        "seconds": seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "output_bytes": sum((folder / "cache" / s["file"]).stat().st_size for s in meta["shards"]),
        "shards": len(meta["shards"]),
        "images": meta["num_images"],
    }


def run_import(folder: Path, shard_size: int) -> dict:
    """`measure` in a fresh subprocess, so that its peak RSS is its own."""
    argv = [sys.executable, "-m", "pipeline.bench.imports", "--worker", str(folder), "--shard-size", str(shard_size)]
    return fresh_process_result(argv, "bench import worker")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign bench import", description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000, help="image–caption pairs (default 1M)")
    p.add_argument("--dim-image", type=int, default=768)
    p.add_argument("--dim-text", type=int, default=768)
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--shard-size", type=int, default=10000, help="images per shard (default 10000)")
    p.add_argument("--dir", type=Path, help="where the temporary inputs and cache go (default: the system's temp)")
    p.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    require_positive(args, ("rows", "dim_image", "dim_text", "captions_per_image", "shard_size"))
    if args.worker:
        print(json.dumps(measure(args.worker, args.shard_size)))
        return 0
    if args.dir is not None:
        args.dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="xalign-bench-import-", dir=args.dir))
    try:
        start = time.perf_counter()
        files = generate(folder, args.rows, args.dim_image, args.dim_text, args.captions_per_image)
        generate_s = time.perf_counter() - start
        result = run_import(folder, args.shard_size)
        input_bytes = sum(path.stat().st_size for path in files.values())
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    summary = {
        "rows": args.rows,
        "images": result["images"],
        "dim_image": args.dim_image,
        "dim_text": args.dim_text,
        "shard_size": args.shard_size,
        "seconds": result["seconds"],
        "rows_per_s": args.rows / result["seconds"],
        "peak_rss_mb": result["peak_rss_mb"],
        "input_bytes": input_bytes,
        "output_bytes": result["output_bytes"],
        "shards": result["shards"],
        "generate_s": generate_s,
        "rss_method": "ru_maxrss of a fresh subprocess running only the import",
    }
    print("| rows | dims | seconds | rows/s | peak RSS MB | input GB | output GB |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| {args.rows} | {args.dim_image}+{args.dim_text} | {summary['seconds']:.1f} | {summary['rows_per_s']:.0f} | "
        f"{summary['peak_rss_mb']:.0f} | {input_bytes / 1e9:.2f} | {summary['output_bytes'] / 1e9:.2f} |"
    )
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
