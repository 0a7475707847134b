"""`xalign encode --tokens [--image-tokens N]` end to end: what the shards hold, pooled embeddings unchanged,
pooling to N tokens, refusals, the read-back checks and the token readers."""

import shutil

import h5py
import numpy as np
import pytest
import tiny_models
import torch
import torch.nn.functional as F
from PIL import Image
from test_encode_runs import MINILM, argv, folder_dataset

from encoding import cache, token_shards
from encoding.backbones import load_image_backbone
from encoding.commands import encode
from encoding.commands import inspect as inspect_command
from encoding.encode import EncodeRequest
from encoding.errors import BadInput
from pipeline import cli

CPU = torch.device("cpu")


def token_argv(root, rows, out, *extra):
    """`argv` with resnet18 at 128 px: a 4x4 feature map per image."""
    args = argv(root, rows, out, *extra)
    args[args.index("--image-size") + 1] = "128"
    return args


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    """{'pooled', 'tokens', 'pooled_to_4'}: the same dataset encoded three ways."""
    root = tmp_path_factory.mktemp("tokens")
    dataset = folder_dataset(root / "data", 10, corrupt=True)
    extras = {"pooled": [], "tokens": ["--tokens"], "pooled_to_4": ["--tokens", "--image-tokens", "4"]}
    for name, extra in extras.items():
        assert encode.main(token_argv(*dataset, root / name, *extra)) == 0
    return {name: root / name for name in extras} | {"dataset": dataset}


def shards(out):
    meta = cache.read_metadata(out)
    return meta, [(out / shard["file"], shard) for shard in meta["shards"]]


def test_token_cache_keeps_the_pooled_embeddings_bit_for_bit(caches):
    pairs = zip(shards(caches["tokens"])[1], shards(caches["pooled"])[1], strict=True)
    for (tokens_path, _), (pooled_path, _) in pairs:
        with h5py.File(tokens_path) as a, h5py.File(pooled_path) as b:
            for key in ("images/embeddings", "captions/embeddings", "images/ids", "captions/text"):
                assert np.array_equal(a[key][()], b[key][()]), key
            assert "images/tokens" not in b and "images/tokens" in a
    arrays = cache.load_cache(caches["tokens"])
    assert np.array_equal(arrays.image_embeddings, cache.load_cache(caches["pooled"]).image_embeddings)


def test_metadata_and_shards_hold_the_backbones_tokens(caches):
    meta, files = shards(caches["tokens"])
    assert meta["tokens"] == {"image_tokens": None} and cache.read_metadata(caches["pooled"])["tokens"] is None
    image, text = meta["image_model"], meta["text_model"]
    assert (image["num_tokens"], image["token_dim"], image["token_grid"]) == (16, 512, [4, 4])
    assert (text["token_dim"], text["max_tokens"]) == (384, 256) and meta["complete"] and meta["fingerprint"]
    assert token_shards.has_tokens(meta) and not token_shards.has_tokens(cache.read_metadata(caches["pooled"]))
    backbone = load_image_backbone("timm:resnet18", CPU, image_size=128)
    for path, entry in files:
        shapes = token_shards.shard_token_shapes(path, entry, meta)
        assert shapes["images/tokens"] == (entry["num_images"], 16, 512)
        with h5py.File(path) as f:
            assert f["images/tokens"].dtype == np.float16 and f["images/tokens"].chunks[1:] == (16, 512)
            paths = f["images/paths"].asstr()[()]
        if not len(paths):
            continue
        pixels = torch.stack([backbone.preprocess(Image.open(p)) for p in paths])
        expected = backbone.encode_with_tokens(pixels)[1]
        np.testing.assert_allclose(token_shards.read_image_tokens(path), expected.numpy(), rtol=2e-3, atol=2e-3)
        tokens, mask = token_shards.read_caption_tokens(path)
        assert tokens.shape[1] == mask.sum(axis=1).max() <= 256  # padded to the shard's longest caption
        assert np.all(tokens[~mask] == 0) and np.array_equal(mask, np.cumsum(~mask, axis=1) == 0)  # real first


def test_captions_tokens_equal_minilm_token_embeddings(caches):
    from sentence_transformers import SentenceTransformer

    from encoding.backbones.sentence_transformers import resolve_local

    model = SentenceTransformer(resolve_local("sentence-transformers/all-MiniLM-L6-v2"), device="cpu")
    for path, _ in shards(caches["tokens"])[1]:
        with h5py.File(path) as f:
            texts = list(f["captions/text"].asstr()[()])
        tokens, mask = token_shards.read_caption_tokens(path)
        expected = model.encode(texts, output_value="token_embeddings") if texts else []
        assert mask.sum(axis=1).tolist() == model.tokenize(texts)["attention_mask"].sum(dim=1).tolist()
        for row, own in enumerate(expected):
            np.testing.assert_allclose(tokens[row, : len(own)], own.numpy(), rtol=2e-3, atol=2e-3)


def test_image_tokens_n_is_adaptive_avg_pool2d_of_the_grid(caches):
    meta = cache.read_metadata(caches["pooled_to_4"])
    assert meta["tokens"] == {"image_tokens": 4} and meta["image_model"]["num_tokens"] == 4
    assert meta["image_model"]["token_grid"] == [2, 2]
    for (full, _), (pooled, _) in zip(shards(caches["tokens"])[1], shards(caches["pooled_to_4"])[1], strict=True):
        grid = torch.from_numpy(token_shards.read_image_tokens(full)).float()  # (n, 16, D)
        maps = grid.unflatten(1, (4, 4)).permute(0, 3, 1, 2)
        expected = F.adaptive_avg_pool2d(maps, 2).flatten(2).transpose(1, 2)
        np.testing.assert_allclose(token_shards.read_image_tokens(pooled), expected.numpy(), rtol=2e-3, atol=2e-3)


def test_rerun_with_another_token_request_is_refused(caches, capsys):
    root, rows = caches["dataset"]
    for out, extra, message in (
        (caches["tokens"], [], 'built with tokens={"image_tokens": null}, not null'),
        (caches["tokens"], ["--tokens", "--image-tokens", "4"], "built with tokens.image_tokens=null, not 4"),
        (caches["pooled"], ["--tokens"], 'built with tokens=null, not {"image_tokens": null}'),
    ):
        assert cli.main(["encode", *token_argv(root, rows, out, *extra)]) == 2
        assert message in capsys.readouterr().err
    assert cli.main(["encode", *token_argv(root, rows, caches["tokens"], "--tokens")]) == 0  # nothing to do


def test_image_tokens_flag_is_checked(caches, tmp_path, capsys):
    root, rows = caches["dataset"]
    with pytest.raises(BadInput, match=r"--image-tokens 4: only with --tokens"):
        EncodeRequest(dataset="folder", root=root, image_model="x", text_model="y", out=tmp_path, image_tokens=4)
    for extra, message in (
        (["--image-tokens", "10"], r"--image-tokens 10: expected a perfect square"),
        (["--image-tokens", "25"], r"--image-tokens 25: larger than timm:resnet18's 4x4 token grid; expected at most"),
    ):
        assert cli.main(["encode", *token_argv(root, rows, tmp_path / "out", "--tokens", *extra)]) == 2
        assert message.replace("\\", "") in capsys.readouterr().err
        assert not (tmp_path / "out" / cache.METADATA).exists()


def test_inspect_shows_the_token_shapes(caches, capsys):
    assert inspect_command.main([str(caches["pooled_to_4"])]) == 0
    assert "tokens      image 4 x 512 (grid 2x2, pooled to 4)   text <= 256 x 384" in capsys.readouterr().out


def test_load_cache_reads_no_token_data(caches, monkeypatch):
    read = []
    original = h5py.Dataset.__getitem__
    monkeypatch.setattr(h5py.Dataset, "__getitem__", lambda self, key: read.append(self.name) or original(self, key))
    arrays = cache.load_cache(caches["tokens"])
    assert read and not [name for name in read if "token" in name]
    assert not [field for field in vars(arrays) if "token" in field]


def damaged_copy(caches, tmp_path, key: str, shape) -> tuple:
    """A copy of the token cache whose shard 1 has dataset `key` replaced by zeros of `shape`."""
    copy = tmp_path / "copy"
    shutil.copytree(caches["tokens"], copy)
    path = copy / "shard-00001.h5"
    with h5py.File(path, "a") as f:
        dtype = f[key].dtype
        del f[key]
        f.create_dataset(key, data=np.zeros(shape, dtype=dtype))
    return copy, path


@pytest.mark.parametrize(
    "key, change, message",
    [
        ("captions/token_mask", lambda m, L, D: (m, L - 1), r"'captions/token_mask' has shape \(\d+, \d+\), expected"),
        ("captions/tokens", lambda m, L, D: (m, 300, D), r"'captions/tokens' has shape .* with L <= 256"),
        ("images/tokens", lambda m, L, D: (4, 9, 512), r"'images/tokens' has shape \(4, 9, 512\), expected \(4, 16,"),
    ],
)
def test_a_token_shape_mismatch_is_bad_input_naming_the_shard(caches, tmp_path, key, change, message):
    with h5py.File(caches["tokens"] / "shard-00001.h5") as f:
        m, length, dim = f["captions/tokens"].shape
    copy, path = damaged_copy(caches, tmp_path, key, change(m, length, dim))
    with pytest.raises(BadInput, match=rf"shard-00001\.h5: dataset {message}"):
        cache.load_cache(copy, verify=False)
    if key == "captions/token_mask":
        with pytest.raises(BadInput, match=r"shard-00001\.h5: dataset 'captions/token_mask' has shape"):
            token_shards.read_caption_tokens(path)


def test_token_readers_take_row_ranges_and_refuse_a_shard_without_tokens(caches):
    meta, files = shards(caches["tokens"])
    path = files[1][0]  # 4 images (shard 0 holds 1: the others were unreadable)
    with h5py.File(path) as f:
        whole = f["images/tokens"][()]
        assert np.array_equal(token_shards.read_image_tokens(f, 1, 3), whole[1:3])  # an open file works too
        tokens, mask = token_shards.read_caption_tokens(f, 2, 4)
        assert np.array_equal(tokens, f["captions/tokens"][2:4]) and mask.dtype == bool and len(mask) == 2
    with pytest.raises(IndexError, match=r"rows 0:99 of '/images/tokens'"):
        token_shards.read_image_tokens(path, 0, 99)
    pooled = caches["pooled"] / "shard-00000.h5"
    with pytest.raises(BadInput, match=r"shard-00000\.h5: no dataset 'images/tokens'; expected one in a token cache"):
        token_shards.read_image_tokens(pooled)
    with pytest.raises(BadInput, match=r"shard-00000\.h5: no dataset 'images/tokens'"):
        token_shards.shard_token_shapes(pooled, files[0][1], meta)


def test_metadata_with_a_partial_token_entry_is_refused(caches, tmp_path):
    import json

    copy = tmp_path / "copy"
    shutil.copytree(caches["tokens"], copy)
    meta = cache.read_metadata(copy)
    del meta["text_model"]["max_tokens"]
    (copy / cache.METADATA).write_text(json.dumps(meta))
    with pytest.raises(BadInput, match=r"key 'text_model.max_tokens' missing; expected an integer"):
        cache.read_metadata(copy)


def test_siglip2_tokens_are_stored_as_is_and_only_their_own_count_is_accepted(tmp_path, capsys):
    path = tiny_models.hf_model(tmp_path / "siglip2", "siglip2")
    root, rows = folder_dataset(tmp_path / "data", 3)
    args = argv(root, rows, tmp_path / "cache", "--tokens")
    args[args.index("--image-model") + 1] = f"hf:{path}"
    args[args.index("--text-model") + 1] = f"hf:{path}"
    args.remove("--image-size"), args.remove("32")
    assert cli.main(["encode", *args, "--image-tokens", "4"]) == 2
    assert "--image-tokens 4: " in (err := capsys.readouterr().err) and "16 tokens with no fixed grid" in err
    assert cli.main(["encode", *args, "--image-tokens", "16"]) == 0
    meta = cache.read_metadata(tmp_path / "cache")
    assert (meta["image_model"]["num_tokens"], meta["image_model"]["token_grid"]) == (16, None)
    assert meta["text_model"]["max_tokens"] == 16 and MINILM not in str(meta)
