"""Text tables of results: a run's metrics with chance levels, and rows of runs as markdown or CSV."""

import csv
import io

from pipeline.metrics import chance_recall


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


def markdown(header: list[str], rows: list[list], formats: list[str]) -> str:
    """A markdown table; `formats[i]` formats column i's values (empty cells for None)."""
    cells = [[("" if v is None else f.format(v)) for f, v in zip(formats, row)] for row in rows]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells])


def csv_text(header: list[str], rows: list[list]) -> str:
    """The same rows as CSV (raw values)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue().rstrip("\n")
