"""`xalign demo` replaces only a run it wrote itself (marked `.xalign-demo`); anything else at
`results/<name>` is refused before encoding, and nothing outside the run directory is deleted.
The encoding step is replaced by a synthetic cache so the whole command runs in seconds."""

import pytest
from conftest import write_synthetic_cache

from encoding.errors import BadInput
from pipeline import cli
from pipeline.commands import demo

TINY = ["training.num_epochs=2", "training.device=cpu", "model.output_dim=8", "model.hidden_dim=16"]


@pytest.fixture
def encodes(monkeypatch):
    """`encode_cache` writes a synthetic cache; returns the list of caches it was asked for."""
    asked = []

    def fake_encode(request):
        asked.append(request.out)
        if not (request.out / "metadata.json").exists():
            write_synthetic_cache(request.out)

    monkeypatch.setattr(demo, "encode_cache", fake_encode)
    return asked


def _demo(tmp_path) -> int:
    argv = ["demo", "--out", str(tmp_path), "--images", "60"]
    return cli.main(argv + [item for s in TINY for item in ("--set", s)])


def test_a_users_own_run_named_demo_is_refused_before_encoding(tmp_path, encodes, capsys):
    run = tmp_path / "results" / "demo"
    run.mkdir(parents=True)
    for name in ("config.yaml", "last.pt", "best.pt"):
        (run / name).write_text("the user's own run on another cache")
    assert _demo(tmp_path) == 2
    err = capsys.readouterr().err
    assert f"{run}: exists and is not a run written by `xalign demo`" in err and "pass another --out" in err
    assert encodes == []
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "config.yaml", "last.pt"]


def test_a_demo_run_is_replaced_and_nothing_else(tmp_path, encodes, capsys):
    assert _demo(tmp_path) == 0
    run = tmp_path / "results" / "demo"
    assert (run / demo.MARK).is_file() and (run / "metrics.json").is_file()
    (run / "stale.txt").write_text("from the earlier demo run")
    (tmp_path / "results" / "mine").mkdir()
    (tmp_path / "results" / "mine" / "keep.txt").write_text("keep")
    capsys.readouterr()
    assert _demo(tmp_path) == 0
    assert f"note: replacing the earlier demo run in {run}" in capsys.readouterr().err
    assert not (run / "stale.txt").exists() and (run / demo.MARK).is_file() and (run / "metrics.json").is_file()
    assert (tmp_path / "results" / "mine" / "keep.txt").read_text() == "keep"


def test_earlier_demo_run(tmp_path):
    run = tmp_path / "demo"
    assert demo.earlier_demo_run(run) is False  # nothing there
    run.mkdir()
    (run / ".lock").write_text("")
    assert demo.earlier_demo_run(run) is False  # a lock file alone: nothing to keep
    (run / "config.yaml").write_text("name: demo\n")
    with pytest.raises(BadInput, match="demo: exists and is not a run written by `xalign demo`"):
        demo.earlier_demo_run(run)
    (run / demo.MARK).write_text("")
    assert demo.earlier_demo_run(run) is True
    link = tmp_path / "link"
    link.symlink_to(run, target_is_directory=True)
    with pytest.raises(BadInput, match="link: exists and is not a run written"):
        demo.earlier_demo_run(link)  # the demo never deletes through a link
    (tmp_path / "file").write_text("")
    with pytest.raises(BadInput, match="move it away or pass another --out"):
        demo.earlier_demo_run(tmp_path / "file")
