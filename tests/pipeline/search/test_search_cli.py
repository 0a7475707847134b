"""`xalign index` / `xalign search`: a run's gallery searched by text and by image gives `xalign evaluate`'s
scores and ranks; indexes are bound to the run, cache and split that built them; bad queries exit 2."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from encoding.commands import split
from encoding.errors import BadInput
from pipeline import cli
from pipeline.evaluation.evaluate import evaluate_run, run_on_split
from pipeline.evaluation.metrics import ranks_both_ways
from pipeline.search.gallery import RECORD, gallery_dir
from pipeline.search.searcher import MAX_QUERY_CHARS, Searcher

NO_INDEX = shutil.ignore_patterns("index")  # other modules search the shared run and leave its index there


@pytest.fixture
def run_dir(searchable_run, tmp_path):
    """A private copy of the searchable run (its index is written under it)."""
    shutil.copytree(searchable_run, tmp_path / "x", ignore=NO_INDEX)
    return tmp_path / "x"


@pytest.fixture(scope="module")
def searcher(searchable_run, tmp_path_factory):
    copy = tmp_path_factory.mktemp("searcher") / "x"
    shutil.copytree(searchable_run, copy, ignore=NO_INDEX)
    return Searcher.open(copy)


def test_caption_text_search_ranks_its_image_where_evaluate_does(searcher, searchable_run):
    opened = run_on_split(searchable_run, "test")
    image, text, index = opened.run.embed_split(opened.data)
    _, t2i = ranks_both_ways(image, text, index)
    n = len(image)
    for j, caption in enumerate(opened.data.captions):
        hits = searcher.search_text(str(caption), k=n)
        own = opened.data.image_ids[int(index[j])]
        (mine,) = [h for h in hits if h["id"] == own]
        rank = 1 + sum(h["score"] >= mine["score"] for h in hits if h is not mine)  # ties count against, as in evaluate
        assert rank == int(t2i[j]) and mine["rank"] <= rank, caption
        expected = (image @ text[j]).numpy()
        rows = [list(opened.data.image_ids).index(h["id"]) for h in hits]
        np.testing.assert_allclose([h["score"] for h in hits], expected[rows], atol=1e-4)
    metrics = evaluate_run(searchable_run, "test")
    assert metrics["t2i"]["R@1"] == pytest.approx(100 * float((t2i == 1).float().mean()))


def test_text_search_equals_a_brute_force_ranking(searcher):
    query = "three digits on a dark background"
    vector = searcher.run.encode_texts([query])[0].numpy()
    opened = searcher.opened
    image, _, _ = opened.run.embed_split(opened.data)
    scores = image.numpy() @ vector
    order = np.argsort(-scores, kind="stable")
    hits = searcher.search_text(query, k=len(order))
    by_id = dict(zip(opened.data.image_ids, scores))
    assert sorted(h["id"] for h in hits) == sorted(by_id)
    np.testing.assert_allclose([h["score"] for h in hits], scores[order], atol=1e-5)  # the same order (up to ties)
    np.testing.assert_allclose([h["score"] for h in hits], [by_id[h["id"]] for h in hits], atol=1e-5)


def test_an_image_and_a_caption_find_themselves(searcher):
    g = searcher.gallery
    with Image.open(g.paths[3]) as image:
        hits = searcher.search_image(image.convert("RGB"), k=3)
    assert hits[0]["id"] == g.image_ids[3] and hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert hits[0]["captions"] == g.captions_by_image[3]
    caption_hits = searcher.search_text(g.captions[5], k=2, target="captions")
    assert caption_hits[0]["captions"] == [g.captions[5]] and caption_hits[0]["score"] == pytest.approx(1.0, abs=1e-3)
    assert caption_hits[0]["id"] == g.image_ids[int(g.caption_image_index[5])]


def test_search_cli_table_json_and_grid(run_dir, tmp_path, capsys, caplog):
    assert cli.main(["search", str(run_dir), "a seven and a two", "-k", "4", "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert "no index yet" in caplog.text and (gallery_dir(run_dir, "test") / RECORD).is_file()
    assert [h["rank"] for h in hits] == [1, 2, 3, 4] and set(hits[0]) == {"rank", "score", "id", "path", "captions"}
    assert hits == Searcher.open(run_dir).search_text("a seven and a two", k=4)
    grid = tmp_path / "grid.png"
    assert cli.main(["search", str(run_dir), "a seven and a two", "-k", "4", "--grid", str(grid)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:4] == ["rank", "score", "id", "path"] and len(out) == 6 and out[-1] == f"wrote {grid}"
    assert out[1].split()[2] == hits[0]["id"] and grid.read_bytes()[:4] == b"\x89PNG"
    with Image.open(hits[0]["path"]) as image:
        image.save(tmp_path / "query.png")
    assert cli.main(["search", str(run_dir), "--image", str(tmp_path / "query.png"), "-k", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["id"] == hits[0]["id"]


def test_index_is_kept_when_current_and_refused_when_stale(run_dir, capsys):
    assert cli.main(["index", str(run_dir), "--max-memory", "lots"]) == 2
    assert "--max-memory 'lots': expected a size like 4G or 512M" in capsys.readouterr().err
    assert cli.main(["index", str(run_dir)]) == 0
    assert "wrote" in capsys.readouterr().out
    record = json.loads((gallery_dir(run_dir, "test") / RECORD).read_text())
    assert record["images"]["factory"] == "Flat" and record["images"]["vectors"] == 12
    assert record["captions"]["vectors"] == len(Searcher.open(run_dir).gallery.captions)
    assert cli.main(["index", str(run_dir)]) == 0
    assert "up to date" in capsys.readouterr().out
    assert cli.main(["index", str(run_dir), "--index", "HNSW8"]) == 2
    assert "--force replaces it" in capsys.readouterr().err
    assert cli.main(["index", str(run_dir), "--index", "HNSW8", "--force"]) == 0
    assert json.loads((gallery_dir(run_dir, "test") / RECORD).read_text())["images"]["factory"] == "HNSW8"
    assert (run_dir / "best.pt").is_file() and (run_dir / "metrics.json").is_file()


def test_an_index_of_another_run_is_refused(run_dir, searchable_run, tmp_path, capsys):
    assert cli.main(["index", str(run_dir)]) == 0
    other = tmp_path / "other"
    shutil.copytree(searchable_run, other, ignore=NO_INDEX)
    (other / "best.pt").write_bytes((run_dir / "last.pt").read_bytes())  # another checkpoint, same config
    shutil.copytree(run_dir / "index", other / "index")
    assert cli.main(["search", str(other), "a digit"]) == 2
    err = capsys.readouterr().err
    assert "the index is stale: the run's checkpoint best.pt changed" in err and err.count("checkpoint_sha256") == 1


def test_a_changed_split_makes_the_index_stale(run_dir, demo_cache, tmp_path, capsys):
    cache = tmp_path / "cache"
    shutil.copytree(demo_cache, cache)
    assert cli.main(["index", str(run_dir), "--cache", str(cache)]) == 0
    assert (gallery_dir(run_dir, "test", cache) / RECORD).is_file()
    assert split.main([str(cache), "--val", "12", "--test", "12", "--seed", "1", "--force"]) == 0
    assert cli.main(["search", str(run_dir), "a digit", "--cache", str(cache)]) == 2
    assert "--allow-new-split" in capsys.readouterr().err  # the run's own refusal first
    assert cli.main(["search", str(run_dir), "a digit", "--cache", str(cache), "--allow-new-split"]) == 2
    err = capsys.readouterr().err
    assert "the index is stale: the split changed since it was built (splits_fingerprint" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["   "], "query: empty"),
        (["x" * 100_000], f"at most {MAX_QUERY_CHARS:,}"),
        (["a digit", "-k", "0"], "k 0: expected 1 to 12"),
        (["a digit", "-k", "13"], "k 13: expected 1 to 12"),
        ([], "give a text QUERY or --image PATH"),
        (["a digit", "--image", "query.png"], "give a text QUERY or --image PATH"),
        (["--image", "missing.png"], "--image missing.png: no such file"),
        (["--image", "notes.txt"], "--image notes.txt: not an image"),
        (["a digit", "--split", "nope"], "no split 'nope'"),
        (["a digit", "--grid", "no/dir/g.png"], "--grid no/dir/g.png: its directory no/dir does not exist"),
        (["a digit", "--target", "pixels"], "invalid choice: 'pixels'"),
    ],
)
def test_bad_queries_exit_2(searcher, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    run = searcher.run_dir
    assert cli.main(["search", str(run), *argv]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in (run / "index").iterdir()) == ["test"]


def test_a_directory_without_a_run_exits_2(tmp_path, capsys):
    assert cli.main(["search", str(tmp_path), "a digit"]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert cli.main(["index", str(tmp_path)]) == 2
    assert not (tmp_path / "index").exists()


def test_searcher_refuses_bad_k_and_target(searcher):
    for k, target, message in (
        (0, "images", "k 0: expected 1 to 12"),
        (True, "images", "k True: expected 1 to 12"),
        (2.0, "images", "k 2.0: expected 1 to 12"),
        (3, "pixels", "target 'pixels': choose one of images, captions"),
    ):
        with pytest.raises(BadInput, match=message):
            searcher.search_text("a digit", k, target)
    assert len(searcher.search_text("a digit", 12)) == 12
