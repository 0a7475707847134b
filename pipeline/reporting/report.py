"""What a finished training run leaves next to its checkpoints: test metrics, figures, cost side.

`report_run` (head and backbone runs alike) writes metrics.json, training_curves.png, pca.png,
tsne.png (a sample of at most `MAX_POINTS` image and caption embeddings; t-SNE on at most
`TSNE_POINTS`), gallery.png (when the test images are on disk) and run_info.json: trainable
parameters, training wall time, inference time per 1,000 text queries, peak memory.
"""

import json
import logging
import resource
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from encoding.runtime import synchronize
from pipeline.data.split_tensors import SplitTensors
from pipeline.reporting.plots import embedding_projection, retrieval_gallery, sample_points, training_curves
from pipeline.training.loop import TIMED_QUERIES

MAX_POINTS = 1000
TSNE_POINTS = 500
GALLERY_QUERIES = 4
GALLERY_TOP = 5
log = logging.getLogger(f"xalign.{__name__}")


def peak_memory_mb(device: torch.device) -> float:
    """Peak GPU memory allocated on CUDA, else the process's peak resident set size."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@torch.no_grad()
def inference_ms_per_1000_queries(search: Callable[[], object], device: torch.device) -> float:
    """Milliseconds of `search()` (embedding 1,000 text queries and taking their top K images, see
    `Trainer.query_search`); the best of three runs after a warm-up, with a progress bar on a terminal."""
    search()
    times = []
    for _ in tqdm(range(3), desc=f"timing {TIMED_QUERIES} queries", leave=False, disable=None):
        synchronize(device)
        start = time.perf_counter()
        search()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 1000.0 * min(times) * 1000 / TIMED_QUERIES


def write_projections(test: SplitTensors, image: torch.Tensor, text: torch.Tensor, out_dir: Path) -> list[str]:
    """pca.png on a sample of at most MAX_POINTS embeddings, tsne.png on at most TSNE_POINTS; the names written."""
    index = test.caption_image_index.cpu().numpy()
    labels = None if test.labels is None else test.labels.cpu().numpy()
    written = []
    for name, limit in (("pca", MAX_POINTS), ("tsne", TSNE_POINTS)):
        rows, caps = sample_points(len(image), index, limit)
        if len(rows) + len(caps) < 5:
            continue
        embedding_projection(
            image[rows].cpu().numpy(),
            text[caps].cpu().numpy(),
            None if labels is None else labels[rows],
            None if labels is None else labels[index[caps]],
            out_dir / f"{name}.png",
            name,
        )
        written.append(f"{name}.png")
    return written


def write_gallery(test: SplitTensors, image: torch.Tensor, text: torch.Tensor, path: Path) -> bool:
    """gallery.png: the top-5 images of a few evenly spaced test captions, and where the right image ranks when
    it is not among them (ties count against the query, as in the metrics); False when images are not on disk."""
    if len(test.image_paths) == 0 or not all(Path(p).is_file() for p in test.image_paths):
        return False
    queries = np.linspace(0, len(text) - 1, min(GALLERY_QUERIES, len(text))).round().astype(int)
    all_scores = text[queries] @ image.T
    own = test.caption_image_index[queries].to(all_scores.device)
    own_ranks = (all_scores >= all_scores.gather(1, own[:, None])).sum(dim=1)
    scores, rows = all_scores.topk(min(GALLERY_TOP, len(image)), dim=1)
    captions = [str(test.captions[q]) for q in queries]
    retrieval_gallery(
        captions, rows.cpu().numpy(), scores.cpu().numpy(), test.image_paths, own.cpu().numpy(), own_ranks.cpu(), path
    )
    return True


def report_run(trainer, test: SplitTensors, split_name: str, out_dir: Path, provenance: dict) -> dict:
    """Evaluate the trainer's current (best) weights on `test`; write metrics.json (with `provenance`),
    figures and run_info.json."""
    log.info(
        f"testing epoch {trainer.best_epoch + 1} on the {split_name} split ({len(test.image_ids)} images, "
        f"{len(test.captions)} captions), then figures and the time per {TIMED_QUERIES} queries"
    )
    image, text = trainer.embed(test)
    test = test.to(image.device)
    metrics = {"split": split_name, **trainer.test_metrics(test, image, text)}
    metrics["provenance"] = provenance
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    training_curves(trainer.history, out_dir / "training_curves.png")
    figures = ["training_curves.png", *write_projections(test, image, text, out_dir)]
    if write_gallery(test, image, text, out_dir / "gallery.png"):
        figures.append("gallery.png")
    info = {
        "trainable_parameters": trainer.trainable_parameters(),
        "train_seconds": sum(r["seconds"] for r in trainer.history),
        "inference_ms_per_1000_queries": inference_ms_per_1000_queries(trainer.query_search(test, image), image.device),
        "inference_gallery_images": len(image),
        "train_images": len(trainer.train.image_paths),
        "train_captions": len(trainer.train.caption_image_index),
        "train_streamed": trainer.streams_train,
        "epochs": trainer.epoch,
        "best_epoch": trainer.best_epoch,
        "peak_memory_mb": peak_memory_mb(trainer.device),
        "device": str(trainer.device),
        "precision": trainer.precision,
        "figures": figures,
    }
    (out_dir / "run_info.json").write_text(json.dumps(info, indent=2))
    return metrics
