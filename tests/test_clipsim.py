"""CLIPSIM (vfusion.evaluation.clipsim): the scorer against an independent computation with the real
transformers CLIPModel forward pass and numpy, and ``vfusion evaluate --metrics clipsim`` on a captioned run."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

from tests.backbone_folders import clip_folder, sd_folder
from tests.caption_data import CAPTIONS, clip, run_overrides, sidecar_tree
from tests.conftest import ROOT
from vfusion.cli import main


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return clip_folder(tmp_path_factory.mktemp("clip"))


def independent_clipsim(folder, videos: torch.Tensor, texts: list[str]) -> np.ndarray:
    """Per clip: mean over frames of cos(image, text), from CLIPModel's forward (its own normalised
    image_embeds / text_embeds) on every frame as uint8, in numpy."""
    from transformers import CLIPModel, CLIPProcessor

    model, processor = CLIPModel.from_pretrained(str(folder)).eval(), CLIPProcessor.from_pretrained(str(folder))
    out = []
    for video, text in zip(videos, texts):
        frames = ((video.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 3, 0).numpy()
        inputs = processor(text=[text], images=list(frames), return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            result = model(**inputs)
        image = result.image_embeds.numpy().astype(np.float64)          # (T, D), normalised by the model
        words = result.text_embeds.numpy().astype(np.float64)[0]        # (D,)
        cos = image @ words / (np.linalg.norm(image, axis=1) * np.linalg.norm(words))
        out.append(cos.mean())
    return np.array(out)


def test_scores_equal_an_independent_computation(clip_dir):
    from vfusion.evaluation.clipsim import ClipScorer

    videos = torch.stack([clip(k, frames=3, size=40) for k in range(3)])   # 40 px: resized and cropped to 32
    texts = [CAPTIONS[0], CAPTIONS[2], "x" * 80]                           # the last is cut at 40 tokens
    scorer = ClipScorer(clip_dir)
    got = scorer.scores(videos, texts)
    assert got.shape == (3,) and np.allclose(got, independent_clipsim(clip_dir, videos, texts), atol=1e-5)
    assert not np.allclose(got, scorer.scores(videos, texts[::-1]))      # the text matters
    protocol = scorer.protocol()
    expected = hashlib.sha256(b"model.safetensors\0" + (clip_dir / "model.safetensors").read_bytes()).hexdigest()
    assert protocol["sha256"] == expected and "40 tokens" in protocol["text"] and "crop" in protocol["resize"]


def test_a_folder_that_is_not_clip_is_one_line(tmp_path):
    from vfusion.errors import UserError
    from vfusion.evaluation.clipsim import ClipScorer

    with pytest.raises(UserError, match="not a transformers CLIP folder"):
        ClipScorer(tmp_path)


def test_evaluate_run_clipsim_with_its_real_caption_reference(tmp_path, clip_dir, capsys):
    from vfusion.evaluation.clip_sources import dataset_subsets
    from vfusion.inference.generate import generate, load_pipeline
    from vfusion.rundir import RunDir, settings_from_config

    sd = sd_folder(tmp_path)
    data = sidecar_tree(tmp_path / "data")
    assert main(["train", "--config", str(ROOT / "configs" / "embedded.yaml"), *run_overrides(tmp_path, sd, data),
                 "eval.batch_size=2", "eval.num_videos=2"]) == 0
    run = tmp_path / "run"
    assert main(["evaluate", "--run", str(run), "--metrics", "clipsim", "--num-videos", "2", "--steps", "2",
                 "--no-progress"]) == 2
    assert "--clip-model" in capsys.readouterr().err and not (run / "metrics.json").exists()
    assert main(["evaluate", "--run", str(run), "--metrics", "clipsim", "--clip-model", str(clip_dir),
                 "--num-videos", "2", "--steps", "2", "--no-progress"]) == 0
    result = json.loads((run / "metrics.json").read_text())
    assert set(result["metrics"]) == {"clipsim2_4f", "clipsim2_4f_real"}
    assert result["protocol"]["clipsim"]["model"] == str(clip_dir.resolve())
    # independently: the real subset's clips with their own captions, and the run's clips made from them
    cfg = RunDir(run).config()
    dataset, (indices,) = dataset_subsets(cfg.data, cfg.data.eval_split, [2])
    captions = [dataset.caption(i) for i in indices]
    real = torch.stack([dataset[i][0] for i in indices])
    assert np.isclose(result["metrics"]["clipsim2_4f_real"], independent_clipsim(clip_dir, real, captions).mean(),
                      atol=1e-5)
    settings = settings_from_config(cfg, num_videos=2, steps=2, for_eval=True, prompts=captions)
    fake = torch.cat([v for v, _ in generate(load_pipeline(run, "cpu"), settings, progress=False)])
    assert np.isclose(result["metrics"]["clipsim2_4f"], independent_clipsim(clip_dir, fake, captions).mean(),
                      atol=1e-5)
