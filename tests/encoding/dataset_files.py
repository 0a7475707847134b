"""Small files in each dataset's real on-disk format, written by the tests."""

import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

WORDS = ["red", "blue", "cat", "dog", "small", "large", "sitting", "on", "a", "the", "grass", "table", "photo", "of"]


def write_image(path: Path, seed: int, size=(40, 30)) -> Path:
    """A random RGB image (JPEG or PNG by suffix)."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def write_corrupt(path: Path, kind: str) -> Path:
    """'truncated': a JPEG cut in half; 'text': not an image at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated":
        write_image(path, seed=99, size=(64, 64))
        path.write_bytes(path.read_bytes()[:300])
    else:
        path.write_text("this is not an image")
    return path


def caption(seed: int, k: int) -> str:
    rng = np.random.default_rng(1000 * seed + k)
    return " ".join(rng.choice(WORDS, size=5))


def coco(tmp: Path, year: str = "2014", split: str = "train") -> tuple[Path, Path]:
    """(image folder, captions JSON): 6 images, one with 7 and one with 6 captions, one without any,
    one truncated JPEG and one listed image whose file is missing."""
    folder = tmp / f"{split}{year}"
    counts = {9: 5, 25: 7, 30: 6, 34: 5, 36: 5, 42: 0, 49: 5}
    images, annotations = [], []
    for image_id, count in counts.items():
        name = f"COCO_{split}{year}_{image_id:012d}.jpg"
        images.append({"id": image_id, "file_name": name, "width": 40, "height": 30})
        annotations += [
            {"id": 100 * image_id + k, "image_id": image_id, "caption": caption(image_id, k) + " "}
            for k in range(count)
        ]
        if image_id == 36:
            write_corrupt(folder / name, "truncated")
        elif image_id != 49:
            write_image(folder / name, image_id)
    file = tmp / "annotations" / f"captions_{split}{year}.json"
    file.parent.mkdir(parents=True, exist_ok=True)
    file.write_text(json.dumps({"info": {}, "licenses": [], "images": images, "annotations": annotations}))
    return folder, file


def karpathy(tmp: Path, flavour: str = "coco") -> tuple[Path, Path]:
    """(root, dataset_{coco,flickr30k}.json) with train, val, test and restval images."""
    root = tmp / f"karpathy-{flavour}"
    splits = ["train", "restval", "val", "test", "train", "test"]
    images = []
    for i, split in enumerate(splits):
        entry = {
            "split": split,
            "imgid": i,
            "sentids": [5 * i + k for k in range(5)],
            "sentences": [{"raw": caption(i, k), "tokens": [], "imgid": i, "sentid": 5 * i + k} for k in range(5)],
        }
        if flavour == "coco":
            folder = "val2014" if split in ("val", "test", "restval") else "train2014"
            entry |= {"filepath": folder, "filename": f"COCO_{folder}_{1000 + i:012d}.jpg", "cocoid": 1000 + i}
            write_image(root / folder / entry["filename"], i)
        else:
            entry |= {"filename": f"{5000 + i}.jpg"}
            write_image(root / entry["filename"], i)
        images.append(entry)
    file = root / f"dataset_{flavour}.json"
    file.write_text(json.dumps({"images": images, "dataset": flavour}))
    return root, file


def flickr30k(tmp: Path) -> tuple[Path, Path]:
    """(flickr30k_images, results.csv): 4 images x 5 captions, one row missing its second pipe."""
    folder = tmp / "flickr30k_images"
    lines = ["image_name| comment_number| comment"]
    for i in range(4):
        name = f"{1000092795 + i}.jpg"
        write_image(folder / name, i)
        for k in range(5):
            text = caption(i, k)
            lines.append(f"{name}| {k} {text}" if (i, k) == (2, 4) else f"{name}| {k}| {text}")
    file = tmp / "results.csv"
    file.write_text("\n".join(lines) + "\n")
    return folder, file


CIFAR_CLASSES = [f"class{c:02d}" for c in range(100)]


def cifar100(tmp: Path, n_train: int = 20, n_test: int = 10) -> Path:
    """The `cifar-100-python` folder: `train`, `test` (bytes keys, rows of 3072 uint8) and `meta`."""
    root = tmp / "cifar-100-python"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, n in (("train", n_train), ("test", n_test)):
        payload = {
            b"filenames": [f"img_{i}.png".encode() for i in range(n)],
            b"batch_label": f"{name} batch".encode(),
            b"fine_labels": [int(c) for c in rng.integers(0, 5, size=n)],
            b"coarse_labels": [0] * n,
            b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        }
        (root / name).write_bytes(pickle.dumps(payload))
    meta = {b"fine_label_names": [c.encode() for c in CIFAR_CLASSES], b"coarse_label_names": [b"all"] * 20}
    (root / "meta").write_bytes(pickle.dumps(meta))
    return root


def folder(tmp: Path) -> tuple[Path, Path, Path]:
    """(root, rows.csv, rows.jsonl): 3 images, several rows per image, labels, one bad row each."""
    root = tmp / "pictures"
    for i in range(3):
        write_image(root / "sub" / f"p{i}.png", i)
    rows = [{"image": f"sub/p{i}.png", "caption": caption(i, k), "label": i} for i in range(3) for k in range(2)]
    csv_file = tmp / "rows.csv"
    csv_file.write_text(
        "image,caption,label\n"
        + "".join(f'{r["image"]},"{r["caption"]}",{r["label"]}\n' for r in rows)
        + "sub/p0.png,,0\n"
    )
    jsonl = tmp / "rows.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows) + "{not json\n")
    return root, csv_file, jsonl


def add_member(tar, name: str, data: bytes) -> None:
    """Append `data` as the regular file `name` to an open `tarfile.TarFile`."""
    import io
    import tarfile

    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def webdataset(tmp: Path, num_tars: int = 3, per_tar: int = 4) -> tuple[Path, Path, Path]:
    """(tar directory, image folder, rows.jsonl): the demo's scenes as img2dataset-style tars `00000.tar`, ...
    (`KEY.png`, or `KEY.jpg` for every second one; `KEY.txt` its first caption; `KEY.json`, where every third
    sample lists its first two captions) and the same images and captions as a folder dataset whose image ids are
    the same keys."""
    import tarfile

    from encoding.datasets.demo import CAPTIONS, build_demo

    build_demo(tmp / "demo", num_images=num_tars * per_tar)
    scenes = [json.loads(line) for line in (tmp / "demo" / CAPTIONS).read_text().splitlines()]
    tars, images, rows = tmp / "shards", tmp / "images", []
    tars.mkdir(parents=True)
    images.mkdir()
    for t in range(num_tars):
        with tarfile.open(tars / f"{t:05d}.tar", "w") as tar:
            for i in range(per_tar):
                key, number = f"{t:05d}{i:04d}", t * per_tar + i
                image = images / f"{key}.{'jpg' if i % 2 else 'png'}"
                Image.open(tmp / "demo" / scenes[number]["path"]).save(image)
                captions = scenes[number]["captions"][: 2 if number % 3 == 0 else 1]
                add_member(tar, image.name, image.read_bytes())
                add_member(tar, f"{key}.txt", captions[0].encode())
                meta = {"key": key, "url": f"http://example.com/{key}", "status": "success"}
                add_member(
                    tar, f"{key}.json", json.dumps(meta | ({"captions": captions} if number % 3 == 0 else {})).encode()
                )
                rows += [{"image": image.name, "caption": text} for text in captions]
    (tmp / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tars, images, tmp / "rows.jsonl"
