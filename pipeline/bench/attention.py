"""`xalign bench attention [--tokens 64,256,1024,4096] [--heads ...]`: dense vs sparse attention vs tokens.

Heads (`--heads`, default the token heads): `token_transformer` and `sparse_attention` (the token heads),
and `distilbert` and `longformer` (two-tower text towers: transformers models at random init of
`--hidden-dim` width and `--num-layers` layers, a Longformer window of `--window` tokens each side, its
first token global). For each head and token count T, one training step (forward + backward of the
token head's `encode_image` on a (batch, T, dim) batch of random tokens, or of the text tower on
(batch, T) random token ids; no padding, dropout 0, num_heads 4) is measured in a fresh subprocess: a
step on a tiny slice (one-time costs), a warm-up step, then `--repeats` timed steps; `seconds` is the
best (per batch). `token_transformer` is dense attention (PyTorch's multi-head attention, which may
run a fused kernel that keeps memory linear while time stays quadratic); `sparse_attention` is the
blocked sliding window (`--window` each side) plus one global token.

`peak_mb` is the step's own working memory (activations, gradients, workspace). On CUDA:
torch.cuda.max_memory_allocated() over the steps minus the memory allocated before them (parameters
and inputs). On CPU: the growth of the subprocess's peak resident set size (ru_maxrss) from just
before the warm-up to after the steps; the subprocess runs nothing else, so this is the step's
high-water mark as the OS saw it (allocator caching included; noisy below a few MB). A step that
runs out of memory (or whose subprocess is killed) is reported with seconds and peak_mb null and a
note. Prints a table, then one JSON object last on stdout:
{"device", "threads", "batch_size", "dim", "hidden_dim", "num_layers", "window", "repeats",
"memory_method", "rows": [{"head", "tokens", "seconds", "peak_mb", "note"}, ...]}.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import torch

from encoding.errors import BadInput
from encoding.runtime import resolve_device, timed
from pipeline import heads
from pipeline.bench.arguments import positive_list, require_positive

HEADS = ("token_transformer", "sparse_attention", "distilbert", "longformer")
TEXT_TOWERS = {  # model type → transformers config keys of the bench's sizes
    "distilbert": lambda a, t: {
        "dim": a.hidden_dim,
        "hidden_dim": 4 * a.hidden_dim,
        "n_layers": a.num_layers,
        "n_heads": 4,
        "max_position_embeddings": max(t, 512),
        "dropout": 0.0,
        "attention_dropout": 0.0,
    },
    "longformer": lambda a, t: {
        "hidden_size": a.hidden_dim,
        "intermediate_size": 4 * a.hidden_dim,
        "num_hidden_layers": a.num_layers,
        "num_attention_heads": 4,
        "attention_window": 2 * a.window,
        "max_position_embeddings": t + 2,
        "pad_token_id": 0,
        "hidden_dropout_prob": 0.0,
        "attention_probs_dropout_prob": 0.0,
    },
}
VOCAB = 1000  # random token ids of the text towers
MEMORY_METHODS = {
    "cuda": "torch.cuda.max_memory_allocated during the steps minus memory allocated before them",
    "cpu": "ru_maxrss growth of a fresh subprocess per measurement, from before the warm-up to after the steps",
}


def memory_mb(device: torch.device) -> float:
    """The current allocation (CUDA) or the peak resident set size so far (CPU), in MB."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def out_of_memory(err: Exception) -> bool:
    """Whether `err` is an allocation failure (CUDA's OutOfMemoryError, or the CPU allocator's RuntimeError)."""
    return isinstance(err, torch.OutOfMemoryError | MemoryError) or "can't allocate memory" in str(err)


def training_step(head: str, tokens: int, args, device: torch.device):
    """(`step(rows, length)`: one forward + backward on the first rows and positions of the batch, the batch)."""
    torch.manual_seed(0)
    if head in TEXT_TOWERS:
        from transformers import AutoConfig, AutoModel

        from encoding.backbones.text_encoder import HfTextTower

        config = AutoConfig.for_model(head, vocab_size=VOCAB, **TEXT_TOWERS[head](args, tokens))
        model = HfTextTower(AutoModel.from_config(config), "cls").to(device)
        batch = torch.randint(1, VOCAB, (args.batch_size, tokens), device=device)

        def forward(ids: torch.Tensor) -> torch.Tensor:
            return model(ids, torch.ones_like(ids, dtype=torch.bool))[0]
    else:
        options = {"output_dim": args.hidden_dim, "hidden_dim": args.hidden_dim, "num_layers": args.num_layers}
        options.update({"dropout": 0.0, **({"window": args.window} if head == "sparse_attention" else {})})
        model = heads.build(head, args.dim, args.dim, **options).to(device)
        batch = torch.randn(args.batch_size, tokens, args.dim, device=device)
        forward = model.encode_image

    def step(rows: int = args.batch_size, length: int = tokens) -> None:
        model.zero_grad(set_to_none=True)
        forward(batch[:rows, :length]).sum().backward()

    return step


def measure(head: str, tokens: int, args, device: torch.device) -> dict:
    """Seconds per forward + backward step (best of `repeats`, after a warm-up) and the step's peak memory."""
    step = training_step(head, tokens, args, device)
    step(1, 8)  # one-time costs (kernel loading, autograd engine start) stay out of the measurement
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    before = memory_mb(device)
    try:
        step()
        seconds = min(timed(step, device) for _ in range(args.repeats))
    except (RuntimeError, MemoryError) as err:
        if not out_of_memory(err):
            raise
        return {"head": head, "tokens": tokens, "seconds": None, "peak_mb": None, "note": f"out of memory: {err}"}
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else memory_mb(device)
    return {"head": head, "tokens": tokens, "seconds": seconds, "peak_mb": peak - before, "note": None}


def run_one(head: str, tokens: int, args) -> dict:
    """`measure` in a fresh subprocess running this same code, so that its peak memory is its own."""
    argv = [sys.executable, "-m", "pipeline.bench.attention", "--worker", "--head", head, "--tokens", str(tokens)]
    for name in ("batch_size", "dim", "hidden_dim", "num_layers", "window", "repeats", "device"):
        argv += [f"--{name.replace('_', '-')}", str(getattr(args, name))]
    root = str(Path(heads.__file__).resolve().parents[2])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(argv, capture_output=True, text=True, env=env)
    if done.returncode < 0:
        note = f"worker killed by signal {-done.returncode} (out of memory?)"
        return {"head": head, "tokens": tokens, "seconds": None, "peak_mb": None, "note": note}
    if done.returncode != 0:
        raise RuntimeError(f"bench attention worker failed for {head} at {tokens} tokens:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xalign bench attention", description=__doc__)
    p.add_argument("--tokens", default="64,256,1024,4096", help="token counts, comma-separated")
    p.add_argument(
        "--heads", default="token_transformer,sparse_attention", help=f"comma-separated, of: {', '.join(HEADS)}"
    )
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--dim", type=int, default=64, help="input token dim")
    p.add_argument("--hidden-dim", type=int, default=64, help="head width (and output dim)")
    p.add_argument("--num-layers", type=int, default=2)
    p.add_argument("--window", type=int, default=32, help="sparse heads: tokens attended on each side")
    p.add_argument("--repeats", type=int, default=3, help="timed steps; the best counts")
    p.add_argument("--device", default="auto", help="cpu, cuda[:N] or auto")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--head", choices=HEADS, help=argparse.SUPPRESS)  # the worker's one head
    return p


def print_table(rows: list[dict]) -> None:
    print("| head | tokens | seconds / batch | peak MB | note |")
    print("|---|---|---|---|---|")
    for r in rows:
        seconds = "null" if r["seconds"] is None else f"{r['seconds']:.4f}"
        peak = "null" if r["peak_mb"] is None else f"{r['peak_mb']:.1f}"
        print(f"| {r['head']} | {r['tokens']} | {seconds} | {peak} | {r['note'] or ''} |")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    counts = positive_list("--tokens", args.tokens, "64,256,1024")
    require_positive(args, ("batch_size", "dim", "hidden_dim", "num_layers", "window", "repeats"))
    device = resolve_device(args.device)
    if args.worker:
        print(json.dumps(measure(args.head, counts[0], args, device)))
        return 0
    chosen = args.heads.split(",")
    if not chosen or not set(chosen) <= set(HEADS):
        raise BadInput(f"--heads {args.heads!r}: expected comma-separated names of: {', '.join(HEADS)}")
    rows = [run_one(head, tokens, args) for head in chosen for tokens in counts]
    print_table(rows)
    sizes = {name: getattr(args, name) for name in ("batch_size", "dim", "hidden_dim", "num_layers", "window")}
    summary = {"device": str(device), "threads": torch.get_num_threads(), **sizes, "repeats": args.repeats}
    print(json.dumps({**summary, "memory_method": MEMORY_METHODS[device.type], "rows": rows}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
