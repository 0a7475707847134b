"""`xalign demo [--out DIR] [--images N]`: the main job end to end on the embedded demo dataset, on CPU in minutes.

Builds N digit scenes from scikit-learn's bundled digits, encodes them (timm ResNet-18, randomly
initialised since no weights can be downloaded; the real MiniLM sentence-transformers model for
text), splits by image, trains the `configs/heads/demo.yaml` head pair, evaluates on the test split
and prints R@K next to chance. Outputs: DIR/data/demo/N, DIR/pretrain_encoded/demo-N, DIR/results/demo
(an earlier demo run there is replaced, with a note; any other directory there is refused).
"""

import argparse
import time
from pathlib import Path

from encoding import cache
from encoding.encode import EncodeRequest, encode_cache
from encoding.errors import BadInput
from encoding.split import split_cache
from pipeline.config import load_config
from pipeline.runs import prepare_run_dir, train_run
from pipeline.tables import metrics_table
from pipeline.training.heads import HeadTrainer

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "heads" / "demo.yaml"
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
    cache_dir = args.out / "pretrain_encoded" / f"demo-{args.images}"
    config = load_config(args.config, [f"data.cache={cache_dir}", *args.overrides])
    run_dir = args.out / "results" / config.name
    if run_dir.exists() and not (run_dir / "config.yaml").is_file():
        raise BadInput(f"{run_dir}: exists and is not a run directory; move it or pass another --out")
    print(f"[1/4] encoding {args.images} demo scenes into {cache_dir}")
    request = EncodeRequest(
        dataset="demo",
        root=args.out / "data" / "demo" / str(args.images),
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
        print(f"[2/4] image-level split: keeping {cache_dir / cache.SPLITS}")
    else:
        print("[2/4] image-level split")
        split_cache(cache_dir, val=0.1, test=0.2, tuning=min(500, args.images // 3), seed=0)
    print(f"[3/4] training heads ({args.config})")
    if run_dir.exists():
        print(f"note: replacing the earlier demo run in {run_dir}")
    run_dir = prepare_run_dir(config.name, resume=False, overwrite=True, results=args.out / "results")
    run = train_run(HeadTrainer, config, run_dir)
    print(f"[4/4] test retrieval (best epoch {run.result.best_epoch + 1} of {run.result.epochs_run})")
    print(metrics_table(run.metrics, with_chance=True))
    print(f"results in {run_dir} ({time.perf_counter() - start:.0f}s in all)")
    return 0
