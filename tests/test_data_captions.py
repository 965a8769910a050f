"""Captioned datasets (vfusion.data.captions): sidecar .txt files, a captions CSV, WebVid's metadata CSV;
the missing-caption policy; captions through the dataset and the clip cache; ``vfusion data check``'s report."""

from __future__ import annotations

import csv
import shutil
import warnings

import pytest

from tests.caption_data import CAPTIONS, csv_tree, sidecar_tree, webvid_tree
from test_data_fixtures import data_config
from vfusion.cli import main
from vfusion.config import ConfigError
from vfusion.data import build_dataset, build_listing
from vfusion.data.errors import DatasetError


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    base = tmp_path_factory.mktemp("captioned")
    return {"sidecar": sidecar_tree(base / "sidecar"), "csv": csv_tree(base / "csv"),
            "webvid": webvid_tree(base / "wv")}


def copy(tree, tmp_path):
    return shutil.copytree(tree, tmp_path / "copy")


def listing(dataset, root, **data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_listing(data_config(dataset=dataset, root=str(root), **data))


def test_sidecar_layout_reads_each_videos_txt(trees):
    got = listing("captions", trees["sidecar"])
    assert got.captioned and [it.key for it in got.items] == [f"00000/{k:09d}.mp4" for k in range(4)]
    assert [it.caption for it in got.items] == list(CAPTIONS)  # the trailing newline is stripped


def test_csv_layout_and_webvid_layout(trees):
    got = listing("captions", trees["csv"])
    assert [it.caption for it in got.items] == list(CAPTIONS) and got.missing == []
    assert "captions.csv" in got.description
    web = listing("webvid", trees["webvid"])
    assert [it.key for it in web.items] == ["001000_001001/31353427", "001000_001001/31353428",
                                            "001001_001002/31353429", "001001_001002/31353430"]
    assert [it.caption for it in web.items] == list(CAPTIONS)
    assert web.items[0].path.endswith("001000_001001/31353427.mp4")


def test_dataset_items_carry_their_caption(trees, tmp_path):
    for name, root in (("captions", trees["sidecar"]), ("webvid", trees["webvid"])):
        ds = build_dataset(data_config(dataset=name, root=str(root), num_frames=4, resolution=16,
                                       cache_dir=str(tmp_path / "c")), train=False)
        clip, label, caption = ds[2]
        assert clip.shape == (3, 4, 16, 16) and label == 0 and caption == CAPTIONS[2]
    # the clip cache keeps the captions, and a changed caption selects another cache
    root = copy(trees["sidecar"], tmp_path)
    cfg = data_config(dataset="captions", root=str(root), num_frames=4, resolution=16, cache="clips",
                      cache_dir=str(tmp_path / "cache"), num_workers=0)
    cached = build_dataset(cfg, train=False)
    assert [cached[i][2] for i in range(4)] == list(CAPTIONS)
    (root / "00000" / "000000001.txt").write_text("a green cone spinning")
    again = build_dataset(cfg, train=False)
    assert again[1][2] == "a green cone spinning" and again.path != cached.path


@pytest.mark.parametrize("damage,kind", [("delete", "no caption file"), ("empty", "empty caption file"),
                                         ("bytes", "unreadable caption file")])
def test_missing_empty_unreadable_caption_error_or_counted_skip(trees, tmp_path, damage, kind):
    root = copy(trees["sidecar"], tmp_path)
    txt = root / "00000" / "000000002.txt"
    {"delete": lambda: txt.unlink(), "empty": lambda: txt.write_text("  \n"),
     "bytes": lambda: txt.write_bytes(b"\xff\xfe\xfa caption")}[damage]()
    with pytest.raises(DatasetError) as err:
        listing("captions", root)
    message = str(err.value)
    assert len(message.splitlines()) == 1 and "000000002.mp4" in message and kind in message
    assert "data.missing_caption=skip" in message
    got = listing("captions", root, missing_caption="skip")
    assert len(got.items) == 3 and len(got.caption_skipped) == 1
    assert got.caption_skipped[0].startswith(f"00000/000000002.mp4: {kind} 000000002.txt")


def test_csv_rows_absent_on_disk_are_missing_and_videos_absent_from_the_csv_have_no_caption(trees, tmp_path):
    root = copy(trees["csv"], tmp_path)
    rows = list(csv.DictReader(open(root / "captions.csv")))
    rows[1]["caption"] = ""
    rows.append({"video": "videos/gone.mp4", "caption": "never written"})
    del rows[3]
    with open(root / "captions.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["video", "caption"])
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(DatasetError, match="clip_1.mp4 has no usable caption .empty caption in captions.csv"):
        listing("captions", root)
    got = listing("captions", root, missing_caption="skip")
    assert [it.key for it in got.items] == ["videos/clip_0.mp4", "videos/clip_2.mp4"]
    assert got.missing == ["videos/gone.mp4"]
    assert sorted(s.split(":")[0] for s in got.caption_skipped) == ["videos/clip_1.mp4", "videos/clip_3.mp4"]
    (root / "captions.csv").write_text("path,text\nvideos/clip_0.mp4,a\n")
    with pytest.raises(DatasetError, match=r"columns \['path', 'text'\], not video, caption"):
        listing("captions", root)


def test_webvid_missing_videos_empty_names_and_csv_choice(trees, tmp_path):
    root = copy(trees["webvid"], tmp_path)
    (root / "001001_001002" / "31353430.mp4").unlink()
    rows = list(csv.DictReader(open(root / "results_2M_train.csv")))
    rows[0]["name"] = " "
    with open(root / "results_2M_train.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    got = listing("webvid", root, missing_caption="skip")
    assert got.missing == ["001001_001002/31353430"] and len(got.items) == 2
    assert got.caption_skipped == ["001000_001001/31353427: empty name in the CSV"]
    webvid_tree(tmp_path / "val", n=1, name="results_2M_val.csv")
    shutil.copy(tmp_path / "val" / "results_2M_val.csv", root)
    shutil.copytree(tmp_path / "val" / "001000_001001", root / "001000_001001", dirs_exist_ok=True)
    test = listing("webvid", root, split="test", missing_caption="skip")
    assert "results_2M_val.csv" in test.description and [it.caption for it in test.items] == [CAPTIONS[0]]
    (root / "results_test.csv").write_text("videoid,name,page_dir\n")  # two CSVs for the test split
    with pytest.raises(DatasetError, match="set data.captions_file"):
        listing("webvid", root, split="test")
    only = listing("webvid", root, captions_file="results_2M_train.csv", missing_caption="skip")
    assert len(only.items) == 2


def test_config_checks_the_caption_keys():
    with pytest.raises(ConfigError, match="data.missing_caption"):
        data_config(missing_caption="ignore")
    with pytest.raises(ConfigError, match="data.caption_dropout"):
        data_config(caption_dropout=1.0)


def _check(argv, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["data", "check", "--num-frames", "4", *argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_data_check_reports_captions_in_words_and_tokens(trees, tmp_path, capsys):
    from tests.backbone_folders import TEXT_LENGTH, _clip_tokenizer

    root = copy(trees["sidecar"], tmp_path)
    (root / "00000" / "000000000.txt").write_text("")
    long = "a very long caption that goes on and on about a red ball"
    (root / "00000" / "000000003.txt").write_text(long)
    rc, out, _ = _check(["--dataset", "captions", "--root", str(root)], capsys)
    assert rc == 0
    assert "captions     3 (0 missing, 1 empty, 0 unreadable" in out
    words = [len(c.split()) for c in (CAPTIONS[1], CAPTIONS[2], long)]
    assert f"caption len  {min(words)}-{max(words)} words" in out and "00000/000000000.mp4: empty" in out
    tok_dir = tmp_path / "tok"
    _clip_tokenizer().save_pretrained(str(tok_dir))
    rc, out, _ = _check(["--dataset", "captions", "--root", str(root), "--tokenizer", str(tok_dir)], capsys)
    tokens = [2 + len(c.replace(" ", "")) for c in (CAPTIONS[1], CAPTIONS[2], long)]  # one per byte, bos + eos
    assert rc == 0 and f"caption len  {min(tokens)}-{max(tokens)} tokens" in out
    cut = sum(n > TEXT_LENGTH for n in tokens)
    assert cut == 1 and f"; 1 cut at the tokenizer's limit of {TEXT_LENGTH} tokens" in out
    rc, _, err = _check(["--dataset", "captions", "--root", str(root), "--tokenizer", str(tmp_path / "no")], capsys)
    assert rc == 2 and "tokenizer folder" in err
    rc, out, _ = _check(["--dataset", "webvid", "--root", str(trees["webvid"])], capsys)
    assert rc == 0 and "captions     4 (0 missing" in out
    rc, _, err = _check(["--dataset", "webvid", "--root", str(tmp_path)], capsys)
    assert rc == 1 and "videoid,name,page_dir" in err
