"""Text tables of results: a run's metrics with chance levels, and rows of runs as markdown, LaTeX or CSV."""

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass

from pipeline.evaluation.metrics import chance_median_rank, chance_recall


def metrics_table(metrics: dict, ks=(1, 5, 10), with_chance: bool = False) -> str:
    """Markdown table of R@K and median rank both ways, plus zero-shot accuracy. `with_chance` adds what random
    scores give: i2t with the split's mean captions per image as positives among its captions, t2i one image
    among its images."""
    n_img, n_cap = metrics["num_images"], metrics["num_captions"]
    per_image = max(1, round(n_cap / max(1, n_img - metrics.get("images_without_captions", 0))))
    rows = [("i2t", metrics["i2t"], n_cap, per_image), ("t2i", metrics["t2i"], n_img, 1)]
    header = "| direction | " + " | ".join(f"R@{k}" for k in ks) + " | median rank |"
    lines = [header, "|" + "---|" * (len(ks) + 2)]
    for name, values, gallery, positives in rows:
        lines.append(
            f"| {name} | " + " | ".join(f"{values[f'R@{k}']:.1f}" for k in ks) + f" | {values['median_rank']:.1f} |"
        )
        if with_chance:
            chance = [chance_recall(gallery, k, positives) for k in ks]
            median = chance_median_rank(gallery, positives)
            lines.append(f"| {name} chance | " + " | ".join(f"{c:.1f}" for c in chance) + f" | {median:.1f} |")
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


@dataclass(frozen=True)
class Style:
    """How a layout writes ± (pm), the † after a flagged cell (mark) and before its note line, and plain text."""

    pm: str
    mark: str
    note: str
    escape: Callable[[str], str]


LATEX_SPECIALS = {
    "\\": r"\textbackslash{}",
    "_": r"\_",
    "%": r"\%",
    "&": r"\&",
    "#": r"\#",
    "$": r"\$",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
}


def latex_escape(text: str) -> str:
    """Text with LaTeX's special characters escaped, so it prints as written."""
    return "".join(LATEX_SPECIALS.get(char, char) for char in text)


MARKDOWN = Style(pm=" ± ", mark=" †", note="† ", escape=lambda text: text.replace("|", "\\|"))
LATEX = Style(pm=r" $\pm$ ", mark=r"\textsuperscript{\dag}", note=r"\textsuperscript{\dag}\,", escape=latex_escape)


def markdown(header: list[str], cells: list[list[str]], notes: list[str] = ()) -> str:
    """A markdown table of cell texts, then a blank line and the notes."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines + ([""] + list(notes) if notes else []))


def latex(header: list[str], cells: list[list[str]], align: str, notes: list[str] = ()) -> str:
    """A booktabs tabular of cell texts (already escaped); notes span the table under the bottom rule."""
    lines = [rf"\begin{{tabular}}{{{align}}}", r"\toprule", " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(row) + r" \\" for row in cells]
    lines += [r"\bottomrule"] + [rf"\multicolumn{{{len(header)}}}{{l}}{{\footnotesize {note}}} \\" for note in notes]
    return "\n".join(lines + [r"\end{tabular}"])


def csv_text(header: list[str], rows: list[list]) -> str:
    """Rows as CSV (raw values, empty cells for None)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([["" if v is None else v for v in row] for row in rows])
    return out.getvalue().rstrip("\n")
