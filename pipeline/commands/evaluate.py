"""`xalign evaluate`: retrieval (and zero-shot) metrics of a trained run, or of a cache's raw embeddings.

`xalign evaluate RUN_DIR [--split test]` → `RUN_DIR/metrics.json` (or `--out FILE`);
`xalign evaluate --cache DIR [--split test]` → `DIR/metrics-<split>.json`, the zero-shot baseline
of backbones that share an embedding space (image and text dims must be equal; cosine scores).
`RUN_DIR --cache DIR` evaluates the run's heads on another cache with the same backbones.
`--zeroshot` adds top-1/top-5 classification from class-name prompts (caches with labels).
A `xalign backbone-train` run embeds the split's images (and caption texts, two-tower) with its towers.
A cross_encoder run, or a backbone run with fusion layers, re-ranks its own dual top K; `--rerank-with
DUAL_RUN [--rerank-k K]` re-ranks the top K of another dual run (head or backbone) of the same cache
and split instead (→ `RUN_DIR/metrics-rerank-<DUAL>[-k<K>].json`;
`--rerank-k K` alone → `metrics-rerank-k<K>.json`). A K beyond a gallery re-ranks all of it, with a
warning naming the K used per direction.
`--out FILE` never replaces a run's own files (config, checkpoints, metrics*.json, ...; exit 2), except
the file evaluate writes without `--out`, so `evaluate RUN --out RUN/metrics.json` is the default spelled out.
"""

import argparse
import json
import sys
from pathlib import Path

from encoding.errors import BadInput
from pipeline.evaluation.evaluate import Rerank, default_run_output, evaluate_cache, evaluate_run
from pipeline.evaluation.rerank import clamp_warning
from pipeline.evaluation.zeroshot import ZeroShotOptions
from pipeline.reporting.tables import metrics_table
from pipeline.runs.files import check_output


def parse_ks(text: str) -> tuple[int, ...]:
    try:
        ks = tuple(int(k) for k in text.split(","))
    except ValueError:
        ks = ()
    if not ks or min(ks) < 1:
        raise BadInput(f"--ks '{text}': expected comma-separated positive integers like 1,5,10")
    return tuple(sorted(set(ks)))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign evaluate", description=__doc__)
    p.add_argument("run_dir", nargs="?", type=Path, help="a run directory of `xalign train` or `backbone-train`")
    p.add_argument("--cache", type=Path, help="a cache: its raw embeddings alone, or the data for RUN_DIR's heads")
    p.add_argument("--split", default="test", help="a split of splits.json, or 'all'")
    p.add_argument("--out", type=Path, help="metrics JSON file")
    p.add_argument("--ks", default="1,5,10", help="comma-separated K values (default 1,5,10)")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in RUN_DIR (best.pt or last.pt)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--allow-new-split", action="store_true", help="evaluate a run on a split re-made since training")
    p.add_argument("--no-verify", dest="verify", action="store_false", help="skip hashing the cache's shards")
    r = p.add_argument_group("re-ranking (RUN_DIR a cross_encoder run)")
    r.add_argument("--rerank-with", type=Path, metavar="DUAL_RUN", help="re-rank the top K of this dual-encoder run")
    r.add_argument("--rerank-k", type=int, metavar="K", help="candidates re-ranked per query (default: model.rerank_k)")
    z = p.add_argument_group("zero-shot classification (caches with image labels)")
    z.add_argument("--zeroshot", action="store_true", help="add top-1/top-5 accuracy from class-name prompts")
    z.add_argument("--classes", type=Path, help="JSON list of class names (default: classes.json in the data root)")
    z.add_argument("--templates", help="template set name in configs/zeroshot/templates.yaml, or a YAML file")
    z.add_argument("--prompt-cache", type=Path, help="a cache whose captions hold the prompts (same text model)")
    return p


def default_output(args) -> Path:
    """Where the metrics go without `--out`: `DIR/metrics-<split>.json` for a cache alone, else the run's file
    for this split, cache and re-ranking."""
    if args.run_dir is None:
        return args.cache / f"metrics-{args.split}.json"
    default = default_run_output(args.run_dir, args.split, args.cache)
    if args.rerank_with is not None or args.rerank_k is not None:
        dual = "" if args.rerank_with is None else f"-{args.rerank_with.resolve().name}"
        k = "" if args.rerank_k is None else f"-k{args.rerank_k}"
        default = default.replace("metrics", f"metrics-rerank{dual}{k}", 1)
    return args.run_dir / default


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.run_dir is None and args.cache is None:
        raise BadInput("evaluate: give RUN_DIR, --cache DIR, or both")
    if args.run_dir is None and args.allow_new_split:
        raise BadInput("--allow-new-split: applies to a run (RUN_DIR) trained on an earlier split; none was given")
    if args.run_dir is None and (args.rerank_with or args.rerank_k is not None):
        raise BadInput("--rerank-with/--rerank-k: apply to a cross_encoder run (RUN_DIR); none was given")
    ks = parse_ks(args.ks)
    zeroshot = ZeroShotOptions(args.classes, args.templates, args.prompt_cache) if args.zeroshot else None
    out = default_output(args)
    if args.out:
        check_output(args.out, "--out", default=out)
        out = args.out
    if args.run_dir is None:
        metrics = evaluate_cache(args.cache, args.split, ks, args.device, zeroshot, args.verify)
    else:
        metrics = evaluate_run(
            args.run_dir,
            args.split,
            ks,
            args.cache,
            args.device,
            zeroshot,
            args.checkpoint,
            args.allow_new_split,
            args.verify,
            Rerank(args.rerank_with, args.rerank_k),
        )
    Path(out).write_text(json.dumps(metrics, indent=2))
    print(metrics_table(metrics, ks))
    if warning := clamp_warning(metrics):
        print(warning, file=sys.stderr)
    print(f"wrote {out}")
    return 0
