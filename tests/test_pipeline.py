"""VideoFusionPipeline: export at the end of training, save/load round trips for every model, the CLI
paths (sample, export) through it, and checkpoints that cannot run code."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

from tests.conftest import ROOT, tiny_config, tiny_loader, tiny_spec
from vfusion.cli import main


def _train(tmp_path, *overrides, name="run", stage="video"):
    from vfusion.training.runner import fit

    run = tmp_path / name
    cfg = tiny_config(run, "train.max_steps=2", "model.dit.patch_size=4", *overrides)
    fit(cfg, stage=stage, train_loader=tiny_loader(), spec_info=tiny_spec())
    return run


@pytest.mark.parametrize("model", ["videofusion", "video_unet", "dit"])
def test_training_writes_a_pipeline_that_round_trips(tmp_path, model):
    from vfusion import VideoFusionPipeline

    run = _train(tmp_path, f"model.name={model}")
    folder = run / "pipeline"
    index = json.loads((folder / "model_index.json").read_text())
    assert index["_class_name"] == "VideoFusionPipeline" and index["video_config"]["model"] == model
    assert list(folder.rglob("*.safetensors")) and not list(folder.rglob("*.bin"))
    assert (folder / "scheduler" / "scheduler_config.json").is_file() and (folder / "README.md").is_file()
    if model == "videofusion":  # the base generator is a plain diffusers UNet folder
        from diffusers import UNet2DModel

        UNet2DModel.from_pretrained(str(folder / "base"))
    pipe = VideoFusionPipeline.from_pretrained(str(folder))
    out = pipe(num_inference_steps=3, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.frames.shape == (2, 4, 16, 16, 3) and out.frames.dtype == np.float32  # sample.batch_size=2
    assert 0 <= out.frames.min() and out.frames.max() <= 1
    assert out.class_labels.tolist() == [0, 1]
    # saving the loaded pipeline again and loading it gives the same videos
    pipe.save_pretrained(str(tmp_path / "again"))
    again = VideoFusionPipeline.from_pretrained(str(tmp_path / "again"))
    out2 = again(num_inference_steps=3, generator=torch.Generator().manual_seed(0), progress=False)
    assert np.array_equal(out.frames, out2.frames)
    pt = pipe(num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt", progress=False)
    assert pt.frames.shape == (2, 3, 4, 16, 16) and torch.allclose((pt.frames + 1) / 2, torch.from_numpy(
        out.frames).permute(0, 4, 1, 2, 3), atol=1e-6)
    pil = pipe(num_inference_steps=1, batch_size=1, generator=torch.Generator().manual_seed(0), output_type="pil",
               progress=False)
    assert len(pil.frames) == 1 and len(pil.frames[0]) == 4 and pil.frames[0][0].size == (16, 16)


def test_exported_pipeline_equals_the_trained_module_with_ema_weights(tmp_path):
    from vfusion import VideoFusionPipeline
    from vfusion.training.runner import module_from_checkpoint

    run = _train(tmp_path, "train.ema_decay=0.5", "train.max_steps=3")
    module = module_from_checkpoint(run)
    with module.ema_model():
        ref = module.pipeline()(num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                                           output_type="pt", progress=False).frames
    raw = module.pipeline()(num_inference_steps=3, generator=torch.Generator().manual_seed(0),
                                       output_type="pt", progress=False).frames
    loaded = VideoFusionPipeline.from_pretrained(str(run / "pipeline"))(
        num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="pt", progress=False).frames
    assert torch.equal(loaded, ref) and not torch.equal(loaded, raw)


def test_stage1_pipeline_and_base_unet(tmp_path):
    from vfusion import VideoFusionPipeline

    run = _train(tmp_path, "pretrain.max_steps=2", name="base", stage="pretrain")
    assert (run / "base_unet" / "config.json").is_file()
    pipe = VideoFusionPipeline.from_pretrained(str(run / "pipeline"))
    assert pipe.video_config["model"] == "image_unet" and pipe.video_config["num_frames"] == 1
    out = pipe(batch_size=3, num_inference_steps=2, generator=torch.Generator().manual_seed(0), progress=False)
    assert out.frames.shape == (3, 1, 16, 16, 3)


def test_sample_cli_equals_the_pipeline_call(tmp_path, capsys):
    """``vfusion sample --seed 0 --steps S`` writes the frames ``pipe(generator=seed 0)`` returns (first batch)."""
    from vfusion import VideoFusionPipeline

    run = _train(tmp_path)
    assert main(["sample", "--run", str(run), "--seed", "0", "--steps", "3", "--num-videos", "3"]) == 0
    saved = np.load(run / "samples" / "videos.npy")
    assert saved.shape == (3, 4, 16, 16, 3) and len(list((run / "samples").glob("video_*.mp4"))) == 3
    pipe = VideoFusionPipeline.from_pretrained(str(run / "pipeline"))
    out = pipe(num_inference_steps=3, generator=torch.Generator().manual_seed(0), progress=False)
    assert np.array_equal((out.frames * 255).round().astype(np.uint8), saved[:2])
    manifest = json.loads((run / "samples" / "samples.json").read_text())
    assert manifest["steps"] == 3 and manifest["seed"] == 0 and manifest["num_videos"] == 3


def test_export_from_a_step_checkpoint(tmp_path):
    run = _train(tmp_path, "train.max_steps=4")
    ckpts = sorted((run / "checkpoints").glob("step*.ckpt"))
    assert ckpts
    out = tmp_path / "exported"
    assert main(["export", "--run", str(run), "--checkpoint", str(ckpts[0]), "--out", str(out)]) == 0
    index = json.loads((out / "model_index.json").read_text())
    step = torch.load(ckpts[0], weights_only=True)["global_step"]
    assert index["video_config"]["trained"]["global_step"] == step
    assert "training steps: " + str(step) in (out / "README.md").read_text()


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_crafted_checkpoint_cannot_run_code(tmp_path, capsys):
    run = _train(tmp_path)
    marker = tmp_path / "pwned"
    ckpt = run / "checkpoints" / "last.ckpt"
    state = torch.load(ckpt, weights_only=True)
    state["extra"] = _Exploit(marker)
    torch.save(state, ckpt)
    # with pickle.load this file would run the command:
    assert pickle.dumps(_Exploit(marker))
    assert main(["export", "--run", str(run)]) == 2
    assert "refused for safety" in capsys.readouterr().err
    assert main(["sample", "--run", str(run), "--steps", "2", "--num-videos", "1"]) == 0  # reads pipeline/ only
    from vfusion.training.runner import fit

    cfg = tiny_config(run, "train.max_steps=3")
    with pytest.raises(Exception, match="refused for safety"):
        fit(cfg, resume=True, train_loader=tiny_loader(), spec_info=tiny_spec())
    assert not marker.exists()


def test_a_run_without_pipeline_says_how_to_export(tmp_path, capsys):
    import shutil

    run = _train(tmp_path)
    shutil.rmtree(run / "pipeline")
    assert main(["sample", "--run", str(run), "--steps", "2"]) == 2
    assert "vfusion export --run" in capsys.readouterr().err
    assert main(["export", "--run", str(run)]) == 0
    assert main(["sample", "--run", str(run), "--steps", "2", "--num-videos", "1"]) == 0


def test_no_unsafe_load_in_the_package():
    hits = [str(p) for p in (ROOT / "vfusion").rglob("*.py") if "weights_only=False" in p.read_text()]
    assert hits == []


@pytest.mark.parametrize("prediction", ["v_prediction", "sample"])
def test_training_end_to_end_with_other_prediction_types(tmp_path, prediction):
    """Every model learns the process's target; the pipeline samples with a scheduler of the same type."""
    from vfusion import VideoFusionPipeline
    from vfusion.diffusion.factory import make_process
    from vfusion.diffusion.process import read_config

    for model in ("videofusion", "video_unet"):
        run = _train(tmp_path, f"diffusion.prediction_type={prediction}", f"model.name={model}", name=model)
        assert make_process(read_config(run / "scheduler")).prediction_type == prediction
        pipe = VideoFusionPipeline.from_pretrained(str(run / "pipeline"))
        assert pipe.scheduler.config.prediction_type == prediction
        out = pipe(num_inference_steps=2, generator=torch.Generator().manual_seed(0), progress=False)
        assert np.isfinite(out.frames).all()


def test_pipeline_rejects_bad_arguments(tmp_path):
    from vfusion import VideoFusionPipeline
    from vfusion.errors import UserError

    pipe = VideoFusionPipeline.from_pretrained(str(_train(tmp_path) / "pipeline"))
    for kwargs, msg in (({"num_inference_steps": 0}, "sampling steps"), ({"batch_size": 0}, "at least one"),
                        ({"guidance_scale": -1.0}, "negative"), ({"class_labels": [5]}, "outside"),
                        ({"output_type": "gif"}, "output_type")):
        with pytest.raises(UserError, match=msg):
            pipe(**kwargs)


@pytest.mark.slow  # a fresh interpreter: about 12 s
def test_import_vfusion_stays_light():
    code = "import sys, vfusion; vfusion.VideoFusionPipeline; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", "import sys, vfusion; print('torch' in sys.modules)"],
                         capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "False"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True).returncode == 0


@pytest.mark.slow  # a fresh interpreter: about 13 s
def test_from_pretrained_in_a_fresh_process(tmp_path):
    """diffusers imports no component module by itself; the pipeline must load with only `import vfusion`."""
    run = _train(tmp_path)
    code = ("import torch; from vfusion import VideoFusionPipeline; "
            f"p = VideoFusionPipeline.from_pretrained({str(run / 'pipeline')!r}); "
            "print(p(num_inference_steps=1, progress=False).frames.shape)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("(2, 4, 16, 16, 3)")
