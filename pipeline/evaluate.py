"""`xalign evaluate`: retrieval metrics of a trained run, or of a cache's raw embeddings.

`xalign evaluate RUN_DIR [--split test]` → `RUN_DIR/metrics.json` (or `--out FILE`);
`xalign evaluate --cache DIR [--split test]` → `DIR/metrics-<split>.json`, the zero-shot baseline
of backbones that share an embedding space (image and text dims must be equal).
"""

import argparse
import json
from pathlib import Path

import torch

from encoding.errors import BadInput
from pipeline.config import from_dict
from pipeline.data import SplitTensors, load_splits
from pipeline.engine import build_model_and_loss
from pipeline.metrics import chance_recall, retrieval_metrics


def load_run(run_dir: Path, checkpoint: str = "best.pt"):
    """(config, head pair in eval mode) of a run directory written by `xalign train`."""
    path = Path(run_dir) / checkpoint
    if not path.is_file():
        raise BadInput(f"{path}: no checkpoint; is {run_dir} a run directory written by `xalign train`?")
    state = torch.load(path, map_location="cpu", weights_only=False)
    config = from_dict(state["config"])
    model, _ = build_model_and_loss(config, *state["dims"])
    model.load_state_dict(state["model"])
    return config, model.eval()


@torch.no_grad()
def embed_split(model, split: SplitTensors, batch_size: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, D) image and (M, D) caption embeddings of `split` through the heads."""
    model.eval()
    image = torch.cat(
        [model.encode_image(split.image[i : i + batch_size]) for i in range(0, len(split.image), batch_size)]
    )
    text = torch.cat([model.encode_text(split.text[i : i + batch_size]) for i in range(0, len(split.text), batch_size)])
    return image, text


def evaluate_run(run_dir: Path, split: str = "test", ks=(1, 5, 10)) -> dict:
    config, model = load_run(run_dir)
    data = load_splits(Path(config.data.cache), [split])[split]
    image, text = embed_split(model, data)
    return {"split": split, **retrieval_metrics(image, text, data.caption_image_index, ks)}


def evaluate_cache(cache_dir: Path, split: str = "test", ks=(1, 5, 10)) -> dict:
    data = load_splits(cache_dir, [split])[split]
    if data.image.shape[1] != data.text.shape[1]:
        raise BadInput(
            f"{cache_dir}: image dim {data.image.shape[1]} != text dim {data.text.shape[1]}; raw embeddings "
            "can only be compared when both backbones share one space (e.g. a CLIP or SigLIP cache)"
        )
    return {"split": split, **retrieval_metrics(data.image, data.text, data.caption_image_index, ks)}


def metrics_table(metrics: dict, ks=(1, 5, 10), with_chance: bool = False) -> str:
    """Markdown table of R@K both ways (and the chance level of random scores)."""
    n_img, n_cap = metrics["num_images"], metrics["num_captions"]
    per_image = round(n_cap / max(1, n_img))
    rows = [("i2t", metrics["i2t"], n_cap, per_image), ("t2i", metrics["t2i"], n_img, 1)]
    header = "| direction | " + " | ".join(f"R@{k}" for k in ks) + " | median rank |"
    lines = [header, "|" + "---|" * (len(ks) + 2)]
    for name, values, gallery, positives in rows:
        lines.append(
            f"| {name} | " + " | ".join(f"{values[f'R@{k}']:.1f}" for k in ks) + f" | {values['median_rank']:.0f} |"
        )
        if with_chance:
            chance = [chance_recall(gallery, k, positives) for k in ks]
            lines.append(f"| {name} chance | " + " | ".join(f"{c:.1f}" for c in chance) + f" | {gallery / 2:.0f} |")
    lines.append(f"rsum {metrics['rsum']:.1f} on {n_img} images, {n_cap} captions ({metrics['split']} split)")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign evaluate", description=__doc__)
    p.add_argument("run_dir", nargs="?", type=Path, help="a run directory written by `xalign train`")
    p.add_argument("--cache", type=Path, help="evaluate a cache's raw embeddings instead")
    p.add_argument("--split", default="test")
    p.add_argument("--out", type=Path, help="metrics JSON file")
    p.add_argument("--ks", default="1,5,10", help="comma-separated K values")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if (args.run_dir is None) == (args.cache is None):
        raise BadInput("evaluate: give either RUN_DIR or --cache DIR")
    try:
        ks = tuple(int(k) for k in args.ks.split(","))
    except ValueError as err:
        raise BadInput(f"--ks '{args.ks}': expected comma-separated integers like 1,5,10") from err
    if args.cache is not None:
        metrics = evaluate_cache(args.cache, args.split, ks)
        out = args.out or args.cache / f"metrics-{args.split}.json"
    else:
        metrics = evaluate_run(args.run_dir, args.split, ks)
        out = args.out or args.run_dir / "metrics.json"
    Path(out).write_text(json.dumps(metrics, indent=2))
    print(metrics_table(metrics, ks))
    print(f"wrote {out}")
    return 0
