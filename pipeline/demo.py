"""`xalign demo [--out DIR]`: the main job end to end on the embedded demo dataset, on CPU in minutes.

Builds digit scenes from scikit-learn's bundled digits, encodes them (timm ResNet-18, randomly
initialised since no weights can be downloaded; the real MiniLM sentence-transformers model for
text), splits by image, trains the `configs/demo.yaml` head pair, evaluates on the test split and
prints R@K next to chance. Outputs: DIR/data/demo, DIR/pretrain_encoded/demo, DIR/results/demo.
"""

import argparse
import shutil
import time
from pathlib import Path

from encoding import encode, split
from encoding.errors import BadInput
from pipeline.config import load_config
from pipeline.evaluate import metrics_table
from pipeline.train import train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"
IMAGE_MODEL = "timm:resnet18"
TEXT_MODEL = "st:sentence-transformers/all-MiniLM-L6-v2"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign demo", description=__doc__)
    p.add_argument("--out", type=Path, default=Path("."), help="working directory for data, cache and results")
    p.add_argument("--images", type=int, default=1500, help="number of demo scenes")
    p.add_argument("--config", type=Path, default=CONFIG)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.images < 50:
        raise BadInput(f"--images {args.images}: the demo needs at least 50 scenes")
    start = time.perf_counter()
    data = args.out / "data" / "demo"
    cache_dir = args.out / "pretrain_encoded" / f"demo-{args.images}"
    run_dir = args.out / "results" / "demo"
    print(f"[1/4] encoding {args.images} demo scenes into {cache_dir}")
    encode.main(
        [
            "--dataset",
            "demo",
            "--root",
            str(data / str(args.images)),
            "--out",
            str(cache_dir),
            "--image-model",
            IMAGE_MODEL,
            "--image-size",
            "128",
            "--text-model",
            TEXT_MODEL,
            "--shard-size",
            "500",
            "--batch-size",
            "128",
            "--num-workers",
            "2",
        ]
    )
    print("[2/4] image-level split")
    split.main([str(cache_dir), "--val", "0.1", "--test", "0.2", "--tuning", "500", "--seed", "0"])
    print(f"[3/4] training heads ({args.config})")
    config = load_config(args.config, [f"data.cache={cache_dir}", *args.overrides])
    if run_dir.exists():
        shutil.rmtree(run_dir)
    _, result, metrics = train(config, run_dir)
    print(f"[4/4] test retrieval (best epoch {result.best_epoch} of {result.epochs_run})")
    print(metrics_table(metrics, with_chance=True))
    print(f"results in {run_dir} ({time.perf_counter() - start:.0f}s in all)")
    return 0
