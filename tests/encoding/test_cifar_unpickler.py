"""CIFAR-100 pickles go through a restricted unpickler: real-format files load, crafted ones run nothing."""

import builtins
import os
import pickle
import subprocess

import dataset_files
import numpy as np
import pytest

from encoding.datasets import open_image, read_dataset
from encoding.datasets.cifar100 import load_pickle
from encoding.errors import BadInput
from pipeline import cli


class Call:
    """Pickles as the call `function(*args)`: what a crafted pickle runs under plain `pickle.load`."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(marker) -> dict[str, Call]:
    """Refused global → a pickled call that would create `marker`."""
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        f"{os.system.__module__}.system": Call(os.system, f"touch {marker}"),  # posix.system on Linux
        "builtins.eval": Call(builtins.eval, code),
        "builtins.exec": Call(builtins.exec, code),
        "subprocess.Popen": Call(subprocess.Popen, ["touch", str(marker)]),
        "numpy.testing._private.utils.runstring": Call(np.testing._private.utils.runstring, code, {}),
        "numpy.load": Call(np.load, str(marker)),  # a numpy function, not an array reconstructor
    }


def write_payload(root, name: str, payload) -> None:
    """A `cifar-100-python` folder whose `name` pickle hides the payload under 'data'."""
    root.mkdir(parents=True, exist_ok=True)
    good = dataset_files.cifar100(root.parent / "good")
    for file in ("train", "test", "meta"):
        (root / file).write_bytes((good / file).read_bytes())
    (root / name).write_bytes(pickle.dumps({b"data": payload, b"fine_labels": [0]}))


def test_the_payloads_run_code_under_plain_pickle(tmp_path):
    marker = tmp_path / "MARKER"
    pickle.loads(pickle.dumps(payloads(marker)["builtins.exec"]))
    assert marker.exists()  # so the refusals below are refusals of something real


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_format_pickles_load_at_every_protocol(tmp_path, protocol):
    root = dataset_files.cifar100(tmp_path)
    for name in ("train", "test", "meta"):
        (root / name).write_bytes(pickle.dumps(pickle.loads((root / name).read_bytes()), protocol=protocol))
    records = {r.image_id: r for r in read_dataset("cifar100", root)}
    payload = pickle.loads((root / "train").read_bytes())
    assert len(records) == 30 and records["train-00003"].label == payload[b"fine_labels"][3]
    expected = payload[b"data"][3].reshape(3, 32, 32).transpose(1, 2, 0)
    np.testing.assert_array_equal(np.asarray(open_image(records["train-00003"].path)), expected)


def test_numpy_1_module_names_load(tmp_path):
    """Real CIFAR-100 files name numpy 1.x's `numpy.core.multiarray._reconstruct`."""
    root = dataset_files.cifar100(tmp_path)
    data = pickle.dumps(pickle.loads((root / "train").read_bytes()), protocol=2)
    assert b"numpy._core.multiarray\n_reconstruct" in data
    (root / "train").write_bytes(data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n"))
    assert load_pickle(str(root / "train"))["data"].shape == (20, 3072)


@pytest.mark.parametrize("name", list(payloads("MARKER")))
def test_crafted_pickles_are_refused_and_run_nothing(tmp_path, name):
    marker = tmp_path / "MARKER"
    (tmp_path / "train").write_bytes(pickle.dumps({b"data": payloads(marker)[name], b"fine_labels": [0]}))
    with pytest.raises(BadInput, match=rf"train: refuses to load global {name};.* only dicts, lists, bytes, str"):
        load_pickle(str(tmp_path / "train"))
    assert not marker.exists()


def test_encode_of_a_crafted_cifar_folder_exits_2_and_runs_nothing(tmp_path, capsys):
    marker = tmp_path / "MARKER"
    root = tmp_path / "cifar-100-python"
    write_payload(root, "train", payloads(marker)[f"{os.system.__module__}.system"])
    argv = ["encode", "--dataset", "cifar100", "--root", str(root), "--out", str(tmp_path / "out")]
    assert cli.main([*argv, "--image-model", "timm:resnet18", "--text-model", "st:nonexistent"]) == 2
    assert f"{root / 'train'}: refuses to load global" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "out").exists()


@pytest.mark.parametrize("scheme, item", [("cifar100", "0"), ("cifar100-pair", "0+1")])
def test_a_cache_image_path_into_a_crafted_pickle_runs_nothing(tmp_path, scheme, item):
    """`backbone-train` opens a cache's `images/paths` with `open_image`: a path may point anywhere."""
    marker = tmp_path / "MARKER"
    write_payload(tmp_path / "crafted", "train", payloads(marker)["subprocess.Popen"])
    with pytest.raises(BadInput, match=r"crafted/train: refuses to load global subprocess.Popen"):
        open_image(f"{scheme}://{tmp_path / 'crafted'}/train/{item}")
    assert not marker.exists()


def test_pickles_of_the_wrong_shape_are_bad_input(tmp_path):
    root = dataset_files.cifar100(tmp_path)
    (tmp_path / "junk").write_bytes(b"not a pickle at all")
    with pytest.raises(BadInput, match=r"junk: not a CIFAR-100 python pickle \(UnpicklingError"):
        load_pickle(str(tmp_path / "junk"))
    (tmp_path / "list").write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(BadInput, match=r"list: holds list, expected the dict of a CIFAR-100 python pickle"):
        load_pickle(str(tmp_path / "list"))
    (root / "train").write_bytes(pickle.dumps({b"data": np.zeros((2, 10), np.uint8), b"fine_labels": [0, 1]}))
    with pytest.raises(BadInput, match=r"train: 'data' is uint8 \(2, 10\), expected \(N, 3072\) uint8 pixel rows"):
        read_dataset("cifar100", root)
    (root / "train").write_bytes(pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"fine_labels": [0, 100]}))
    with pytest.raises(BadInput, match=r"train: fine label 100 is not a class of 'meta' \(0..99\)"):
        read_dataset("cifar100", root)
    (root / "meta").write_bytes(pickle.dumps({b"fine_label_names": "abc"}))
    with pytest.raises(BadInput, match=r"meta: 'fine_label_names' missing or not a list of names"):
        read_dataset("cifar100", root)


def test_bad_image_locations_are_bad_input(tmp_path):
    root = dataset_files.cifar100(tmp_path, n_train=3)
    with pytest.raises(BadInput, match=r"image location 'nowhere': expected ROOT/SPLIT/INDEX"):
        open_image("cifar100://nowhere")
    with pytest.raises(BadInput, match=r"train: no image 3; it holds 3"):
        open_image(f"cifar100://{root}/train/3")
    with pytest.raises(BadInput, match=r"image index 'x' is not a non-negative integer"):
        open_image(f"cifar100-pair://{root}/train/0+x")
