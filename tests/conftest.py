"""Shared fixtures: tiny caches built through the real cache writer, and a real demo cache."""

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from encoding import cache
from pipeline.logs import ROOT, configure_logging

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


class ToRootHandlers(logging.Handler):
    """Hands each `xalign` record to the root logger's handlers, where pytest's `caplog` listens (the `xalign`
    loggers do not propagate)."""

    def emit(self, record: logging.LogRecord) -> None:
        logging.getLogger().handle(record)


@pytest.fixture(autouse=True)
def xalign_logging():
    """The `xalign` loggers as `xalign` without flags sets them up (INFO on stderr), in every test, so a test that
    calls a command's `main` or the library directly sees what the command would show; `caplog` sees it too."""
    configure_logging(0)
    logger, forward = logging.getLogger(ROOT), ToRootHandlers()
    logger.addHandler(forward)
    yield
    logger.removeHandler(forward)


@pytest.fixture(autouse=True)
def one_torch_thread():
    """One intra-op thread in every test: tiny models gain nothing from more, and on a busy 2-core machine thread
    barriers stall them (a loop of small draws ran 30x slower with 2). `all_torch_threads` undoes it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield threads
    torch.set_num_threads(threads)


@pytest.fixture
def all_torch_threads(one_torch_thread):
    """torch's own thread count, for a test that runs real models on many images (the demo: 1.6x faster)."""
    import torch

    torch.set_num_threads(one_torch_thread)


def pytest_configure(config):
    config.addinivalue_line("markers", "rendered_figures: draw figures for real (see `unrendered_figures`)")


@pytest.fixture(autouse=True)
def unrendered_figures(request, monkeypatch):
    """Figures are built (data, projections, axes, artists) but not drawn: `Figure.savefig` writes a blank PNG of
    the figure's pixel size and `tight_layout` does nothing. Drawing took 2-3 s of every run's report, a quarter
    of the suite. Tests marked `rendered_figures` draw for real: the figure tests, the smoke run, the demo."""
    if request.node.get_closest_marker("rendered_figures"):
        return
    from matplotlib.figure import Figure
    from PIL import Image

    def blank_png(fig, fname, *, dpi=None, format=None, **_):
        width, height = fig.get_size_inches() * (fig.dpi if dpi in (None, "figure") else dpi)
        Image.new("RGB", (round(width), round(height)), "white").save(fname, format=format or "png")

    monkeypatch.setattr(Figure, "savefig", blank_png)
    monkeypatch.setattr(Figure, "tight_layout", lambda fig, *args, **kwargs: None)


def write_synthetic_cache(
    cache_dir: Path,
    num_images: int = 60,
    captions_per_image=(1, 2, 3),
    image_dim: int = 12,
    text_dim: int = 10,
    shard_size: int = 25,
    seed: int = 0,
    labels: bool = True,
    tokens: tuple[int, int] | None = None,
    dtype: str = "float32",
) -> Path:
    """A complete cache whose captions are noisy linear images of their image's embedding.

    Image i has `captions_per_image[i % len(...)]` captions, so counts vary. `tokens=(T, L)` also
    stores T image tokens (the embedding plus noise) and up to L caption tokens (likewise, 1..L real
    ones, zero padding), as `xalign encode --tokens` does. Returns `cache_dir`.
    """
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(num_images, image_dim)).astype(np.float32)
    mix = rng.normal(size=(image_dim, text_dim)).astype(np.float32)
    counts = [captions_per_image[i % len(captions_per_image)] for i in range(num_images)]
    num_shards = -(-num_images // shard_size)
    cache.init_metadata(
        cache_dir,
        {
            "dataset": {"kind": "synthetic", "root": str(cache_dir), "annotations": None, "limit": None},
            "image_model": {
                "spec": "synthetic:image",
                "dim": image_dim,
                "dtype": dtype,
                "normalized": False,
                "weights": "none",
                **({} if tokens is None else {"token_dim": image_dim, "num_tokens": tokens[0]}),
            },
            "text_model": {
                "spec": "synthetic:text",
                "dim": text_dim,
                "dtype": dtype,
                "normalized": False,
                "weights": "none",
                **({} if tokens is None else {"token_dim": text_dim, "max_tokens": tokens[1]}),
            },
            "shard_size": shard_size,
            "num_shards": num_shards,
            **({} if tokens is None else {"tokens": {"image_tokens": None}}),
            "versions": {},
        },
    )
    for s in range(num_shards):
        rows = range(s * shard_size, min(num_images, (s + 1) * shard_size))
        ids = [f"img{i:04d}" for i in rows]
        cap_rows = [i for i in rows for _ in range(counts[i])]
        text = images[cap_rows] @ mix + 0.3 * rng.normal(size=(len(cap_rows), text_dim)).astype(np.float32)
        data = cache.ShardData(
            image_ids=ids,
            image_embeddings=images[list(rows)],
            image_paths=[f"/nonexistent/{i}.png" for i in ids],
            caption_image_ids=[f"img{i:04d}" for i in cap_rows],
            caption_embeddings=text,
            caption_text=[f"caption {k} of img{i:04d}" for k, i in enumerate(cap_rows)],
            image_labels=np.array([i % 5 for i in rows]) if labels else None,
            image_pixel_sha1=[f"sha{i}" for i in rows],
        )
        if tokens is not None:
            data.image_tokens, data.caption_tokens, data.caption_token_mask = synthetic_tokens(
                rng, images[list(rows)], text, *tokens
            )
        cache.record_shard(cache_dir, cache.write_shard(cache_dir, s, data, dtype=dtype))
    return Path(cache_dir)


def synthetic_tokens(rng, images: np.ndarray, text: np.ndarray, num_tokens: int, max_tokens: int):
    """(n, T, D) image tokens, (m, L, D') caption tokens and (m, L) mask around the pooled vectors; L is
    this shard's longest caption."""
    image_tokens = images[:, None, :] + 0.5 * rng.normal(size=(len(images), num_tokens, images.shape[1]))
    lengths = rng.integers(1, max_tokens + 1, size=len(text))
    mask = np.arange(lengths.max())[None, :] < lengths[:, None]
    caption_tokens = (text[:, None, :] + 0.5 * rng.normal(size=(len(text), lengths.max(), text.shape[1]))) * mask[
        ..., None
    ]
    return image_tokens.astype(np.float16), caption_tokens.astype(np.float16), mask


@pytest.fixture
def synthetic_cache(tmp_path) -> Path:
    """A 60-image synthetic cache (1-3 captions per image) with a random 40/10/10 split."""
    from encoding.commands import split

    path = write_synthetic_cache(tmp_path / "cache")
    assert split.main([str(path), "--val", "10", "--test", "10", "--tuning", "20", "--seed", "0"]) == 0
    return path


@pytest.fixture(scope="session")
def demo_cache(tmp_path_factory) -> Path:
    """A real cache of 80 demo scenes: timm ResNet-18 (random init, 32 px) + the real MiniLM, split 56/12/12."""
    from encoding.commands import encode, split

    root = tmp_path_factory.mktemp("demo")
    out = root / "cache"
    argv = [
        "--dataset",
        "demo",
        "--root",
        str(root / "data"),
        "--out",
        str(out),
        "--image-model",
        "timm:resnet18",
        "--image-size",
        "32",
        "--text-model",
        "st:sentence-transformers/all-MiniLM-L6-v2",
        "--shard-size",
        "30",
        "--batch-size",
        "32",
        "--num-workers",
        "0",
    ]
    from encoding.datasets.demo import build_demo

    build_demo(root / "data", num_images=80)
    assert encode.main(argv) == 0
    assert split.main([str(out), "--val", "12", "--test", "12", "--tuning", "20", "--seed", "0"]) == 0
    return out


def write_head_config(directory: Path, cache: Path, learning_rate: float = 1e-3) -> Path:
    """`directory/c.yaml`: a two-epoch MLP run `x` on `cache` (CPU, batch 8, early stopping off)."""
    path = directory / "c.yaml"
    path.write_text(
        f"name: x\ndata: {{cache: {cache}}}\nmodel: {{output_dim: 8, hidden_dim: 16}}\n"
        f"training: {{num_epochs: 2, patience: 1000, batch_size: 8, device: cpu, learning_rate: {learning_rate}}}\n"
    )
    return path


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """(directory, config) of a finished two-epoch run `results/x` under `directory`, trained once."""
    from encoding.commands import split
    from pipeline import cli

    root = tmp_path_factory.mktemp("trained")
    path = write_synthetic_cache(root / "cache")
    assert split.main([str(path), "--val", "10", "--test", "10", "--seed", "0"]) == 0
    config = write_head_config(root, path)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        assert cli.main(["train", str(config)]) == 0
    return root, config


@pytest.fixture
def run_copy(trained_run, tmp_path, monkeypatch):
    """A private copy of `trained_run` under `tmp_path` (the working directory); returns (run, config)."""
    import shutil

    root, config = trained_run
    shutil.copytree(root / "results", tmp_path / "results")
    monkeypatch.chdir(tmp_path)
    return tmp_path / "results" / "x", config


@pytest.fixture(scope="session")
def searchable_run(demo_cache, tmp_path_factory):
    """The run directory `results/x` of a two-epoch MLP head trained once on `demo_cache` (the real MiniLM text
    backbone and a seeded ResNet-18: text and image queries go through them)."""
    from pipeline import cli

    root = tmp_path_factory.mktemp("searchable")
    config = write_head_config(root, demo_cache)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        assert cli.main(["train", str(config)]) == 0
    return root / "results" / "x"
