"""`xalign bench scale`: the pipeline on synthetic caches of millions of captions, streamed.

For each of `--images` (default 200,000 and 1,000,000 images with 5 captions each, dims 512 and 384,
fp16), a cache is written through the cache writer, then three commands run, each in a fresh process
whose wall time and peak resident memory (`wait4`'s `ru_maxrss`) are its own:
`xalign split` (`--val`/`--test` images held out), `xalign train` of one streamed epoch of an `mlp` head
(`data.stream: true`; the command includes validation and the test report; the epoch's own seconds come
from history.jsonl) and `xalign evaluate` of that run on the test split. Peak memory that stays flat while
the cache grows several times shows the embeddings never all load. With `--cgroup DIR` the commands run
inside that cgroup (give it a memory limit first), and `--stream auto` leaves the choice to the memory
budget, which then counts the cgroup's room. Prints one JSON object last.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from encoding.errors import BadInput
from pipeline.bench.arguments import positive_list, require_positive
from pipeline.bench.streaming import cache_mb, write_bench_cache
from pipeline.data.memory_budget import CGROUP_FILES, cgroup_room_bytes

XALIGN = [sys.executable, "-c", "import sys; from pipeline.cli import main; sys.exit(main())"]


def measured(argv: list[str], cwd: Path, what: str, cgroup: Path | None = None) -> dict:
    """Run `xalign argv` in `cwd` (inside `cgroup` when given) → {seconds, peak_rss_mb} of that process alone;
    `RuntimeError` when it fails."""
    join = None if cgroup is None else lambda: (cgroup / "cgroup.procs").write_text(str(os.getpid()))
    start = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        process = subprocess.Popen(
            [*XALIGN, *argv],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=err,
            preexec_fn=join,  # noqa: PLW1509
        )
        _, status, usage = os.wait4(process.pid, 0)  # this child's own rusage (Popen.wait would not give it)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise RuntimeError(f"bench scale: {what} failed:\n{err.read().decode()[-4000:]}")
    return {"seconds": round(time.perf_counter() - start, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def version(cgroup: Path) -> str:
    return "v2" if (cgroup / CGROUP_FILES["v2"][0]).exists() else "v1"


def head_config(cache_dir: Path, args) -> Path:
    """The config of one streamed epoch of an `mlp` head on `cache_dir` (written beside it)."""
    config = {
        "name": f"scale-{cache_dir.name}",
        "data": {"cache": str(cache_dir), "stream": {"auto": None, "true": True}[args.stream]},
        "model": {"type": "mlp", "output_dim": 256, "hidden_dim": args.hidden_dim},
        "training": {"batch_size": args.batch_size, "num_epochs": 1, "device": args.device, "warmup_steps": 100},
    }
    path = cache_dir.parent / f"{config['name']}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def pipeline_at(size: int, root: Path, args) -> dict:
    """Write a cache of `size` images, then split, train one streamed epoch and evaluate it, each measured."""
    cache_dir = root / f"{size}"
    start = time.perf_counter()
    write_bench_cache(cache_dir, args, size, split=False)
    written = time.perf_counter() - start
    held_out = ["--val", str(args.held_out), "--test", str(args.held_out), "--seed", "0"]
    stages = {"split": measured(["split", str(cache_dir), *held_out], root, "split", args.cgroup)}
    config = head_config(cache_dir, args)
    stages["train"] = measured(["train", str(config)], root, "train", args.cgroup)
    run = root / "results" / f"scale-{cache_dir.name}"
    (epoch,) = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    stages["train"]["epoch_seconds"] = round(epoch["seconds"], 2)
    stages["train"]["streamed"] = json.loads((run / "run_info.json").read_text())["train_streamed"]
    stages["evaluate"] = measured(["evaluate", str(run), "--no-verify"], root, "evaluate", args.cgroup)
    stages["evaluate"]["test_rsum"] = json.loads((run / "metrics.json").read_text())["rsum"]
    return {
        "images": size,
        "captions": size * args.captions_per_image,
        "cache_mb": round(cache_mb(cache_dir)),
        "write_seconds": round(written, 1),
        **stages,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign bench scale", description=__doc__)
    p.add_argument("--images", default="200000,1000000", help="cache sizes in images, comma-separated")
    p.add_argument("--captions-per-image", type=int, default=5)
    p.add_argument("--image-dim", type=int, default=512)
    p.add_argument("--text-dim", type=int, default=384)
    p.add_argument("--held-out", type=int, default=5000, help="images in each of val and test")
    p.add_argument("--hidden-dim", type=int, default=512)
    p.add_argument("--batch-size", type=int, default=1024)
    p.add_argument("--shard-size", type=int, default=10000, help="images per shard")
    p.add_argument("--device", default="auto")
    p.add_argument("--dir", type=Path, help="where the caches go (default: a temporary directory, removed after)")
    p.add_argument("--stream", choices=("true", "auto"), default="true", help="the run's data.stream (auto: null)")
    p.add_argument(
        "--cgroup", type=Path, help="a cgroup directory (v1 or v2, e.g. one with a memory limit) the commands join"
    )
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.tokens = False
    sizes = positive_list("--images", args.images, "200000,1000000")
    numbers = ("captions_per_image", "image_dim", "text_dim", "held_out", "hidden_dim", "batch_size", "shard_size")
    require_positive(args, numbers)
    if min(sizes) <= 2 * args.held_out:
        raise BadInput(f"bench scale: every --images size must exceed 2 x --held-out ({2 * args.held_out})")
    if args.cgroup is not None and not (args.cgroup / "cgroup.procs").is_file():
        raise BadInput(f"bench scale: --cgroup {args.cgroup} is not a cgroup directory (no cgroup.procs)")
    with tempfile.TemporaryDirectory(prefix="xalign-bench-scale-", dir=args.dir) as tmp:
        results = [pipeline_at(size, Path(tmp), args) for size in sizes]
    limit = None if args.cgroup is None else cgroup_room_bytes([(args.cgroup, version(args.cgroup))])
    setting = {"dims": [args.image_dim, args.text_dim], "batch_size": args.batch_size, "stream": args.stream}
    print(json.dumps({"sizes": results, **setting, "cgroup_room_mb": None if limit is None else round(limit / 2**20)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
