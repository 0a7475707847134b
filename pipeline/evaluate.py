"""`xalign evaluate`: retrieval (and zero-shot) metrics of a trained run, or of a cache's raw embeddings.

`xalign evaluate RUN_DIR [--split test]` → `RUN_DIR/metrics.json` (or `--out FILE`);
`xalign evaluate --cache DIR [--split test]` → `DIR/metrics-<split>.json`, the zero-shot baseline
of backbones that share an embedding space (image and text dims must be equal; cosine scores).
`RUN_DIR --cache DIR` evaluates the run's heads on another cache with the same backbones.
`--zeroshot` adds top-1/top-5 classification from class-name prompts (caches with labels).
"""

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F
import yaml

from encoding.errors import BadInput
from encoding.runtime import resolve_device
from pipeline.config import from_dict
from pipeline.data import SplitTensors, load_splits
from pipeline.engine import build_model_and_loss
from pipeline.metrics import chance_recall, retrieval_metrics
from pipeline.zeroshot import ZeroShotOptions, zeroshot_metrics


def load_checkpoint(run_dir: Path, checkpoint: str = "best.pt"):
    """(config, head pair in eval mode, (image_dim, text_dim)) of a run directory written by `xalign train`."""
    path = Path(run_dir) / checkpoint
    if not path.is_file():
        raise BadInput(f"{path}: no checkpoint; is {run_dir} a run directory written by `xalign train`?")
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = from_dict(state["config"])
    model, _ = build_model_and_loss(config, *state["dims"])
    model.load_state_dict(state["model"])
    return config, model.eval(), tuple(state["dims"])


def load_run(run_dir: Path, checkpoint: str = "best.pt"):
    """(config, head pair in eval mode) of a run directory written by `xalign train`."""
    config, model, _ = load_checkpoint(run_dir, checkpoint)
    return config, model


def run_cache(run_dir: Path, config) -> Path:
    """The run's cache: `data.cache` as given, else relative to the directory `results/` was written in."""
    given = Path(config.data.cache)
    candidates = [given] if given.is_absolute() else [given, Path(run_dir).resolve().parents[1] / given]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise BadInput(f"{Path(run_dir) / 'config.yaml'}: data.cache {given} not found; pass --cache DIR")


@torch.no_grad()
def embed_split(model, split: SplitTensors, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) image and (M, D) caption embeddings of `split` through the heads."""
    model.eval()
    image = torch.cat(
        [model.encode_image(split.image[i : i + batch_size]) for i in range(0, len(split.image), batch_size)]
    )
    text = torch.cat([model.encode_text(split.text[i : i + batch_size]) for i in range(0, len(split.text), batch_size)])
    return image, text


def evaluate_run(
    run_dir: Path,
    split: str = "test",
    ks=(1, 5, 10),
    cache_dir: Path | None = None,
    device: str = "cpu",
    zeroshot: ZeroShotOptions | None = None,
    checkpoint: str = "best.pt",
) -> dict:
    """Metrics of a run's heads on `split` of its cache (or of `cache_dir`)."""
    config, model, dims = load_checkpoint(run_dir, checkpoint)
    cache_dir = cache_dir or run_cache(run_dir, config)
    target = resolve_device(device)
    data = load_splits(cache_dir, [split])[split].to(target)
    model.to(target)
    if tuple(data.dims) != dims:
        raise BadInput(f"{cache_dir}: embedding dims {tuple(data.dims)} differ from the run's heads {dims}")
    image, text = embed_split(model, data, config.training.eval_batch_size)
    metrics = {"split": split, **retrieval_metrics(image, text, data.caption_image_index, ks)}
    if zeroshot is not None:
        metrics["zeroshot"] = zeroshot_metrics(cache_dir, data.labels, image, model.encode_text, zeroshot, target)
    return metrics


def evaluate_cache(
    cache_dir: Path, split: str = "test", ks=(1, 5, 10), device: str = "cpu", zeroshot: ZeroShotOptions | None = None
) -> dict:
    """Metrics of a cache's raw, L2-normalised embeddings on `split` (image and text dims must be equal)."""
    target = resolve_device(device)
    data = load_splits(cache_dir, [split])[split].to(target)
    if data.image.shape[1] != data.text.shape[1]:
        raise BadInput(
            f"{cache_dir}: image dim {data.image.shape[1]} != text dim {data.text.shape[1]}; raw embeddings "
            "can only be compared when both backbones share one space (e.g. a CLIP or SigLIP cache)"
        )
    image, text = F.normalize(data.image, dim=-1), F.normalize(data.text, dim=-1)
    metrics = {"split": split, **retrieval_metrics(image, text, data.caption_image_index, ks)}
    if zeroshot is not None:
        metrics["zeroshot"] = zeroshot_metrics(cache_dir, data.labels, image, None, zeroshot, target)
    return metrics


def metrics_table(metrics: dict, ks=(1, 5, 10), with_chance: bool = False) -> str:
    """Markdown table of R@K both ways (and the chance level of random scores), plus zero-shot accuracy."""
    n_img, n_cap = metrics["num_images"], metrics["num_captions"]
    per_image = round(n_cap / max(1, n_img))
    rows = [("i2t", metrics["i2t"], n_cap, per_image), ("t2i", metrics["t2i"], n_img, 1)]
    header = "| direction | " + " | ".join(f"R@{k}" for k in ks) + " | median rank |"
    lines = [header, "|" + "---|" * (len(ks) + 2)]
    for name, values, gallery, positives in rows:
        lines.append(
            f"| {name} | " + " | ".join(f"{values[f'R@{k}']:.1f}" for k in ks) + f" | {values['median_rank']:.1f} |"
        )
        if with_chance:
            chance = [chance_recall(gallery, k, positives) for k in ks]
            lines.append(f"| {name} chance | " + " | ".join(f"{c:.1f}" for c in chance) + f" | {gallery / 2:.0f} |")
    lines.append(f"rsum {metrics['rsum']:.1f} on {n_img} images, {n_cap} captions ({metrics['split']} split)")
    if metrics.get("images_without_captions"):
        lines.append(f"{metrics['images_without_captions']} images without captions left out of i2t")
    if "zeroshot" in metrics:
        z = metrics["zeroshot"]
        lines.append(
            f"zero-shot: top-1 {z['top1']:.1f}%, top-5 {z['top5']:.1f}% over {z['num_classes']} classes "
            f"({z['num_templates']} templates '{z['templates']}'; chance top-1 {100 / z['num_classes']:.1f}%)"
        )
    return "\n".join(lines)


def default_run_output(run_dir: Path, split: str, cache_dir: Path | None) -> str:
    """`metrics.json` for the run's own test split (what `xalign train` wrote), else a name that says what it is."""
    config_file = Path(run_dir) / "config.yaml"
    test_split = from_dict(yaml.safe_load(config_file.read_text())).data.test_split if config_file.is_file() else "test"
    if cache_dir is None:
        return "metrics.json" if split == test_split else f"metrics-{split}.json"
    return f"metrics-{Path(cache_dir).name}-{split}.json"


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
    p.add_argument("run_dir", nargs="?", type=Path, help="a run directory written by `xalign train`")
    p.add_argument("--cache", type=Path, help="a cache: its raw embeddings alone, or the data for RUN_DIR's heads")
    p.add_argument("--split", default="test", help="a split of splits.json, or 'all'")
    p.add_argument("--out", type=Path, help="metrics JSON file")
    p.add_argument("--ks", default="1,5,10", help="comma-separated K values (default 1,5,10)")
    p.add_argument("--checkpoint", default="best.pt", help="checkpoint file in RUN_DIR (best.pt or last.pt)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    z = p.add_argument_group("zero-shot classification (caches with image labels)")
    z.add_argument("--zeroshot", action="store_true", help="add top-1/top-5 accuracy from class-name prompts")
    z.add_argument("--classes", type=Path, help="JSON list of class names (default: classes.json in the data root)")
    z.add_argument("--templates", help="template set name in configs/zeroshot_templates.yaml, or a YAML file")
    z.add_argument("--prompt-cache", type=Path, help="a cache whose captions hold the prompts (same text model)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.run_dir is None and args.cache is None:
        raise BadInput("evaluate: give RUN_DIR, --cache DIR, or both")
    ks = parse_ks(args.ks)
    zeroshot = ZeroShotOptions(args.classes, args.templates, args.prompt_cache) if args.zeroshot else None
    if args.run_dir is None:
        metrics = evaluate_cache(args.cache, args.split, ks, args.device, zeroshot)
        out = args.out or args.cache / f"metrics-{args.split}.json"
    else:
        metrics = evaluate_run(args.run_dir, args.split, ks, args.cache, args.device, zeroshot, args.checkpoint)
        out = args.out or args.run_dir / default_run_output(args.run_dir, args.split, args.cache)
    Path(out).write_text(json.dumps(metrics, indent=2))
    print(metrics_table(metrics, ks))
    print(f"wrote {out}")
    return 0
