"""`xalign demo [--out DIR] [--images N]`: the main job end to end on the embedded demo dataset, on CPU in minutes.

Builds N digit scenes from scikit-learn's bundled digits, encodes them (timm ResNet-18, randomly
initialised since no weights can be downloaded; the real MiniLM sentence-transformers model for
text), splits by image, trains the `configs/demo.yaml` head pair, evaluates on the test split
and prints R@K next to chance. Outputs: DIR/data/demo/N, DIR/pretrain_encoded/demo-N, DIR/results/demo.

The demo marks every run it trains with a `.xalign-demo` file, and replaces DIR/results/<name> (with a
note) only when it holds that mark: an earlier demo run. Any other directory there, a user's own
`xalign train` run of the same name included, is refused before anything is encoded (move it or pass
another --out). The check is repeated under the run directory's lock, and the replacement deletes only
that directory's contents, once the new run has written its first checkpoint (a demo that fails before
leaves the earlier run whole).
"""

import argparse
import logging
import time
from contextlib import nullcontext
from pathlib import Path

from encoding import cache
from encoding.encode import EncodeRequest, encode_cache
from encoding.errors import BadInput
from encoding.split import split_cache
from pipeline.commands import naming_config
from pipeline.config.experiment import load_config
from pipeline.reporting.tables import metrics_table
from pipeline.runs.directory import locked_run, replacing, train_run
from pipeline.runs.lock import LOCK_FILE

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "demo.yaml"  # not in configs/heads/: see its header
IMAGE_MODEL = "timm:resnet18"
TEXT_MODEL = "st:sentence-transformers/all-MiniLM-L6-v2"
MARK = ".xalign-demo"  # in every run the demo trains: only a run holding it is replaced
log = logging.getLogger(f"xalign.{__name__}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign demo", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("."), help="working directory for data, cache and results")
    p.add_argument("--images", type=int, default=1500, help="number of demo scenes")
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def earlier_demo_run(run_dir: Path) -> bool:
    """True when `run_dir` holds a run the demo wrote (to be replaced); False when there is nothing to keep
    (no directory, or one holding only a lock file); BadInput for anything else."""
    if not run_dir.exists() and not run_dir.is_symlink():
        return False
    if run_dir.is_dir() and not run_dir.is_symlink():
        if (run_dir / MARK).is_file():
            return True
        if {entry.name for entry in run_dir.iterdir()} <= {LOCK_FILE}:
            return False
    raise BadInput(
        f"{run_dir}: exists and is not a run written by `xalign demo` (it has no {MARK}); "
        "move it away or pass another --out"
    )


def train_demo_run(config, config_path: Path, run_dir: Path):
    """Train `config` into `run_dir` under its lock, replacing an earlier demo run there (kept if this one fails
    before its first checkpoint, `pipeline.runs.directory.replacing`)."""
    with locked_run(run_dir):
        earlier = earlier_demo_run(run_dir)
        if earlier:
            log.info(f"note: replacing the earlier demo run in {run_dir}")
        with replacing(run_dir) if earlier else nullcontext(), naming_config(config_path):
            (run_dir / MARK).write_text("written by `xalign demo`, which replaces this run when it runs again\n")
            return train_run(config, run_dir)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.images < 50:
        raise BadInput(f"--images {args.images}: the demo needs at least 50 scenes")
    start = time.perf_counter()
    cache_dir = args.out / "pretrain_encoded" / f"demo-{args.images}"
    config = load_config(args.config, [f"data.cache={cache_dir}", *args.overrides])
    run_dir = args.out / "results" / config.name
    earlier_demo_run(run_dir)  # refuse a directory the demo may not replace before encoding anything
    root = args.out / "data" / "demo" / str(args.images)
    log.info(f"[1/4] encoding {args.images} demo scenes (dataset root {root}) into {cache_dir}")
    request = EncodeRequest(
        dataset="demo",
        root=root,
        dataset_options={"num_images": args.images},
        out=cache_dir,
        image_model=IMAGE_MODEL,
        image_size=128,
        text_model=TEXT_MODEL,
        shard_size=500,
        batch_size=128,
        num_workers=2,
    )
    encode_cache(request)
    if (cache_dir / cache.SPLITS).exists():
        log.info(f"[2/4] image-level split: keeping {cache_dir / cache.SPLITS}")
    else:
        log.info("[2/4] image-level split")
        split_cache(cache_dir, val=0.1, test=0.2, tuning=min(500, args.images // 3), seed=0)
    log.info(f"[3/4] training heads ({args.config})")
    run = train_demo_run(config, args.config, run_dir)
    log.info(f"[4/4] test retrieval (best epoch {run.result.best_epoch + 1} of {run.result.epochs_run})")
    print(metrics_table(run.metrics, with_chance=True))
    print(f"dataset root {root} (for `xalign encode --dataset demo --root`), cache {cache_dir}")
    print(f"results in {run_dir} ({time.perf_counter() - start:.0f}s in all)")
    return 0
