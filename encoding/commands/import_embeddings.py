"""`xalign import`: store embeddings made elsewhere as a cache, without the images or the backbones.

  --format pt              --images F.pt --texts F.pt --metadata F.json   (the seed pipeline's layout)
  --format clip-retrieval  --root DIR   (img_emb/img_emb_N.npy, text_emb/text_emb_N.npy, metadata/metadata_N.parquet)
  --format arrays          --images X.npy|.safetensors --texts Y.npy|.safetensors --pairs F.csv|.parquet

One row per image–caption pair; rows of one image share its id and must carry the same image embedding; each
image is stored once. `--image-model` and `--text-model` name the encoders that made the vectors (free text,
e.g. open_clip:ViT-B-32@laion2b_s34b_b79k); they become the cache's model identity and enter its fingerprint.
Rerunning the same command resumes at the missing shards (a no-op on a complete cache); another input or
model on an existing --out is refused.
"""

import argparse
from pathlib import Path

from encoding.encode import summary
from encoding.imports import IMPORTS
from encoding.imports.writer import ImportRequest, import_cache


def build_parser() -> argparse.ArgumentParser:
    """Flags map one to one onto `ImportRequest` fields; an omitted flag takes the field's default."""
    p = argparse.ArgumentParser(
        prog="xalign import",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,
    )
    p.add_argument("--format", required=True, help=f"one of {IMPORTS.names()}")
    p.add_argument("--images", type=Path, help="pt, arrays: image embeddings, one row per pair")
    p.add_argument("--texts", type=Path, help="pt, arrays: caption embeddings, one row per pair")
    p.add_argument("--metadata", type=Path, help="pt: JSON with image_ids (and captions, image_paths) per row")
    p.add_argument("--pairs", type=Path, help="arrays: CSV or parquet with image_id, caption [, image_path, label]")
    p.add_argument("--root", type=Path, help="clip-retrieval: the directory holding img_emb/, text_emb/, metadata/")
    p.add_argument("--image-model", required=True, help="the encoder that made the image vectors (free text)")
    p.add_argument("--text-model", required=True, help="the encoder that made the text vectors (free text)")
    p.add_argument("--out", required=True, type=Path, help="cache directory")
    p.add_argument("--shard-size", type=int, help="images per shard (default 10000)")
    p.add_argument("--dtype", choices=["float16", "float32"], help="stored embedding dtype (default float16)")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    meta = import_cache(ImportRequest(**vars(args)))
    print(summary(args.out, meta))
    return 0
