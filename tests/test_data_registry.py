"""The dataset registry, and ``vfusion.data``'s lazy re-exports (importing it does not import torch)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import vfusion.data
from test_data_fixtures import data_config, sky_tree, ucf_tree
from vfusion.data import registry
from vfusion.data.errors import DatasetError
from vfusion.data.sources import Listing, VideoItem

ROOT = Path(__file__).resolve().parents[1]


def test_data_package_registry_and_cli_modules_do_not_import_torch():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    code = ("import sys, vfusion.data, vfusion.data.commands, vfusion.data.registry, vfusion.data.errors; "
            "vfusion.data.DatasetError; vfusion.data.dataset_names(); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_every_public_name_resolves_lazily():
    import vfusion.data.api as api
    import vfusion.data.embedded as embedded
    import vfusion.data.errors as errors
    import vfusion.data.latents as latents

    for name in vfusion.data.__all__:
        assert getattr(vfusion.data, name) is not None
        assert name in dir(vfusion.data)
    assert vfusion.data.build_dataloader is api.build_dataloader
    assert vfusion.data.default_num_workers is api.default_num_workers
    assert vfusion.data.DatasetError is errors.DatasetError
    assert vfusion.data.ensure_embedded is embedded.ensure_embedded
    assert vfusion.data.LatentCodec is latents.LatentCodec
    assert vfusion.data.dataset_names is registry.dataset_names
    with pytest.raises(AttributeError, match="no_such_name"):
        vfusion.data.no_such_name
    namespace = {}
    exec("from vfusion.data import *", namespace)
    assert set(vfusion.data.__all__) <= set(namespace)


def test_names_entries_and_folds():
    assert registry.dataset_names() == ("embedded", "embedded_text", "ucf101", "sky", "folder", "captions", "webvid")
    assert registry.dataset_names() == tuple(registry.DATASETS)
    for name, entry in registry.DATASETS.items():
        assert isinstance(entry, str) and entry.count(":") == 1
        assert callable(registry.listing_function(name))
    assert {n for n in registry.dataset_names() if registry.has_folds(n)} == {"embedded", "embedded_text", "ucf101"}
    assert {n for n in registry.dataset_names() if registry.is_generated(n)} == {"embedded", "embedded_text"}
    assert registry.DATASETS["ucf101"].folds and not registry.DATASETS["sky"].folds
    assert {n for n in registry.dataset_names() if registry.has_captions(n)} == {"embedded_text", "captions", "webvid"}
    with pytest.raises(TypeError):
        registry.DATASETS["new"] = registry.DatasetEntry("m:f")     # read-only
    with pytest.raises(ValueError, match="module:function"):
        registry.DatasetEntry("no_colon")


@pytest.mark.parametrize("name", ["nope", "", "UCF101"])
def test_unknown_name_names_the_choices(name):
    for call in (registry.listing_function, registry.has_folds):
        with pytest.raises(DatasetError, match=f"unknown data.dataset '{name}'; expected one of "
                                               "embedded, embedded_text, ucf101, sky, folder, captions, webvid"):
            call(name)
    with pytest.raises(DatasetError, match="expected one of embedded, embedded_text, ucf101, sky, folder, captions, "
                                           "webvid"):
        vfusion.data.build_listing(OmegaConf.create({"dataset": name, "split": "train"}))


def toy_listing(data_cfg, split):
    """A listing function registered by the dispatch test below."""
    return Listing(dataset="toy", items=[VideoItem(key=f"{split}/a", path=str(data_cfg.root), label=0)],
                   class_names=["a"], description=f"toy {split}")


def test_build_listing_dispatches_through_the_registry(monkeypatch):
    entry = registry.DatasetEntry(f"{__name__}:toy_listing")
    monkeypatch.setattr(registry, "DATASETS", {**registry.DATASETS, "toy": entry})
    assert "toy" in registry.dataset_names() and not registry.has_folds("toy")
    cfg = OmegaConf.create({"dataset": "toy", "root": "/nowhere", "split": "test"})
    assert vfusion.data.build_listing(cfg).description == "toy test"           # default: data.split
    assert vfusion.data.build_listing(cfg, "train").items[0].key == "train/a"


def test_dataset_info_reports_a_fold_only_for_folded_datasets(tmp_path_factory, tmp_path):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")         # the fixture tree has unreadable and missing videos
        ucf = vfusion.data.dataset_info(data_config(dataset="ucf101", root=str(ucf_tree(tmp_path_factory)), fold=2,
                                                    num_frames=4, short_policy="loop", cache_dir=str(tmp_path / "u")))
    sky = vfusion.data.dataset_info(data_config(dataset="sky", root=str(sky_tree(tmp_path_factory)), fold=2,
                                                num_frames=4, cache_dir=str(tmp_path / "s")), "all")
    assert ucf["fold"] == 2 and sky["fold"] is None


def test_data_check_offers_the_registered_names(capsys):
    from vfusion.cli import main

    with pytest.raises(SystemExit):
        main(["data", "check", "--dataset", "nope", "--root", "."])
    err = capsys.readouterr().err
    assert "'embedded', 'embedded_text', 'ucf101', 'sky', 'folder'" in err
