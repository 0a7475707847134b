"""Figures written next to a run: training curves, PCA / t-SNE of the shared space, a retrieval gallery; and
the grid of a search's top images.

Every figure has a fixed pixel size (figsize x 100 dpi), so tests can check the PNGs. Epochs are numbered
from 1, as the console prints them.
"""

import textwrap
from pathlib import Path

import matplotlib
import numpy as np

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402


def curves_figure(history: list[dict]):
    """Three panels over epochs 1, 2, ...: training loss, validation R@1/R@10 both ways (legend below the
    axes, clear of the curves), learning rate."""
    epochs = [r["epoch"] + 1 for r in history]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4), dpi=100)
    axes[0].plot(epochs, [r["train_loss"] for r in history], marker="o")
    axes[0].set(title="training loss", xlabel="epoch")
    for key in ("val_i2t_R@1", "val_i2t_R@10", "val_t2i_R@1", "val_t2i_R@10"):
        axes[1].plot(epochs, [r[key] for r in history], marker=".", label=key.removeprefix("val_"))
    axes[1].set(title="validation recall (%)", xlabel="epoch")
    axes[1].legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=4, fontsize=8, frameon=False)
    axes[2].plot(epochs, [r["lr"] for r in history], marker=".")
    axes[2].set(title="learning rate (end of epoch)", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    return fig


def training_curves(history: list[dict], path: Path) -> Path:
    """training_curves.png: `curves_figure`, 1500 x 400 pixels."""
    _save(curves_figure(history), path)
    return Path(path)


PROJECTION_SIZE = (12, 5)  # inches at 100 dpi: 1200 x 500 pixels (two panels), 600 x 500 with one
TSNE_ITERATIONS = 500  # half the scikit-learn default: a few seconds on 500 points, layout already settled
GALLERY_CELL = (2.2, 2.4)  # inches per thumbnail: a gallery of Q queries x K images is 220K x 240Q pixels


def sample_points(
    num_images: int, caption_image_index, max_points: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Image rows (n,) and caption rows (m,) of a random sample: images, then their captions, n + m <= max_points."""
    rng = np.random.default_rng(seed)
    index = np.asarray(caption_image_index)
    images = np.sort(rng.permutation(num_images)[: max(1, max_points // 2)])
    captions = np.flatnonzero(np.isin(index, images))
    captions = np.sort(rng.permutation(captions)[: max_points - len(images)])
    return images, captions


def _pca(points: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return PCA(n_components=2, random_state=seed).fit_transform(points)


def _tsne(points: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE
    from threadpoolctl import threadpool_limits

    perplexity = float(min(30.0, max(1.0, (len(points) - 1) / 3)))
    tsne = TSNE(n_components=2, init="pca", perplexity=perplexity, max_iter=TSNE_ITERATIONS, random_state=seed)
    with threadpool_limits(limits=1):  # one thread: fast on <= 500 points, and immune to a busy machine
        return tsne.fit_transform(points)


PROJECTIONS = {"pca": _pca, "tsne": _tsne}  # (P, D) points → (P, 2)


def class_colours(labels) -> tuple[np.ndarray, ListedColormap, np.ndarray]:
    """(each point's class index, a colour map with one distinct colour per class, the sorted classes):
    tab10 up to 10 classes, tab20 up to 20, else as many evenly spaced colours of turbo."""
    classes, codes = np.unique(np.asarray(labels), return_inverse=True)
    n = len(classes)
    colours = (
        plt.get_cmap("turbo")(np.linspace(0, 1, n))
        if n > 20
        else plt.get_cmap("tab20" if n > 10 else "tab10").colors[:n]
    )
    return codes, ListedColormap(colours), classes


def embedding_projection(
    image_emb, text_emb, image_labels, caption_labels, path: Path, method: str, seed: int = 0
) -> Path:
    """2-D PCA or t-SNE of (n, D) images and (m, D) captions: coloured by modality, and by class when labelled."""
    points = np.concatenate([np.asarray(image_emb), np.asarray(text_emb)]).astype(np.float64)
    xy = PROJECTIONS[method](points, seed)
    n = len(image_emb)
    panels = 1 if image_labels is None else 2
    fig, axes = plt.subplots(1, panels, figsize=(PROJECTION_SIZE[0] * panels / 2, PROJECTION_SIZE[1]), dpi=100)
    axes = np.atleast_1d(axes)
    axes[0].scatter(*xy[n:].T, s=6, alpha=0.5, label=f"captions ({len(xy) - n})")
    axes[0].scatter(*xy[:n].T, s=10, alpha=0.7, marker="s", label=f"images ({n})")
    axes[0].set(title=f"{method.upper()} of the shared space, by modality")
    axes[0].legend()
    if image_labels is not None:
        codes, cmap, classes = class_colours(np.concatenate([np.asarray(image_labels), np.asarray(caption_labels)]))
        dots = axes[1].scatter(*xy.T, c=codes, cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, s=8, alpha=0.7)
        axes[1].set(title=f"{method.upper()} by class ({len(classes)} classes)")
        ticks = np.unique(np.linspace(0, len(classes) - 1, min(len(classes), 10)).round().astype(int))
        fig.colorbar(dots, ax=axes[1], label="class").set_ticks(ticks, labels=[str(c) for c in classes[ticks]])
    _save(fig, path)
    return Path(path)


def query_label(query: str, own_rank: int, shown: int, gallery: int) -> str:
    """A gallery row's label: the query, and the right image's rank when it is not among the `shown` images."""
    label = textwrap.fill(query, 28)
    return label if own_rank <= shown else f"{label}\n\nright image: rank {own_rank} of {gallery}"


def retrieval_gallery(queries: list[str], top_rows, top_scores, image_paths, own_rows, own_ranks, path: Path) -> Path:
    """For each of Q text queries, its top K images (Q, K) with scores; the query's own image framed green, or
    its rank (`own_ranks`, 1-based) under the query when it is not among the K."""
    from PIL import Image

    top_rows, top_scores = np.asarray(top_rows), np.asarray(top_scores)
    q, k = top_rows.shape
    fig, axes = plt.subplots(q, k, figsize=(GALLERY_CELL[0] * k, GALLERY_CELL[1] * q), dpi=100, squeeze=False)
    for i in range(q):
        for j in range(k):
            ax, row = axes[i, j], int(top_rows[i, j])
            with Image.open(image_paths[row]) as image:
                ax.imshow(image.convert("RGB"))
            hit = row == int(own_rows[i])
            ax.set_title(f"#{j + 1}  {top_scores[i, j]:.3f}", fontsize=9, color="green" if hit else "black")
            ax.set_xticks([]), ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set(color="green" if hit else "lightgrey", linewidth=4 if hit else 1)
        label = query_label(queries[i], int(own_ranks[i]), k, len(image_paths))
        axes[i, 0].set_ylabel(label, fontsize=8, rotation=0, ha="right", va="center")
    fig.subplots_adjust(left=0.22, right=0.99, top=0.95, bottom=0.02, wspace=0.05, hspace=0.3)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def search_grid(query: str, hits: list[dict], path: Path, columns: int = 5) -> Path:
    """The top images of a search (`pipeline.search.searcher` hits) in rows of `columns`: each with its rank and
    score above and its first caption below, the query as the title."""
    from encoding.datasets import open_image

    rows = max(1, -(-len(hits) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(2.6 * columns, 3.1 * rows + 0.5), dpi=100, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    for ax, hit in zip(axes.flat, hits):
        ax.imshow(open_image(hit["path"]))
        ax.set_title(f"#{hit['rank']}  {hit['score']:.3f}", fontsize=10)
        caption = textwrap.shorten(hit["captions"][0], 60, placeholder="…") if hit["captions"] else ""
        ax.text(0.5, -0.04, textwrap.fill(caption, 30), transform=ax.transAxes, ha="center", va="top", fontsize=8)
    fig.suptitle(textwrap.shorten(query, 100, placeholder="…"), fontsize=12)
    fig.subplots_adjust(left=0.02, right=0.98, top=1 - 0.5 / (3.1 * rows + 0.5), bottom=0.08, hspace=0.45, wspace=0.08)
    fig.savefig(path)
    plt.close(fig)
    return Path(path)


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
