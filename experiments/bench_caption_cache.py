"""What the per-caption text cache saves in a captioned training step.

Builds, offline, a Stable Diffusion 1.x-shaped text folder: a randomly initialised CLIPTextModel of
SD 1.x's size (hidden 768, 12 layers, 12 heads, 77 positions; the byte-level test tokenizer), a small
cross-attention UNet attending to its 768-wide states, a two-block VAE and the SD scheduler; and a
sidecar-caption dataset of ``--videos`` clips. It then trains the same VideoFusion run twice through
``vfusion train``, with ``model.text.cache_size`` at its default (each caption encoded once) and at 0
(every caption encoded at every step), and reports the mean training step time of each
(``model_info.json``'s ``mean_train_step_s``, which leaves out the first five steps). Because whole runs
one after the other see whatever else the machine is doing, it also times the text part of a step alone,
interleaved: a batch of captions through a cold encoder (what every step pays without the cache) against
the same batch from the cache, ``--rounds`` times each, medians.

    python experiments/bench_caption_cache.py --steps 40 --json experiments/results/bench_caption_cache.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def sd_sized_text_folder(folder: Path) -> Path:
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from tests.backbone_folders import SD_SCHEDULER, _clip_tokenizer, _vae

    tokenizer = _clip_tokenizer(max_length=77)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072,
                                        num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id)).eval()
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                                layers_per_block=1, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), norm_num_groups=8,
                                cross_attention_dim=768, attention_head_dim=8)
    pipe = StableDiffusionPipeline(vae=_vae(2), text_encoder=text, tokenizer=tokenizer, unet=unet,
                                   scheduler=DDIMScheduler(**SD_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(str(folder))
    return folder


def train(work: Path, sd: Path, data: Path, steps: int, cache_size: int, batch: int) -> dict:
    from vfusion.cli import main

    run = work / f"run_cache{cache_size}"
    argv = ["train", "--config", str(ROOT / "configs" / "embedded.yaml"), "data.dataset=captions",
            f"data.root={data}", "data.num_frames=4", "data.resolution=16", f"data.batch_size={batch}",
            "data.num_workers=0", f"data.cache_dir={work / 'cache'}", f"model.base.pretrained={sd}",
            "diffusion.prediction_type=null", "train.loss_weighting=none", "sample.sampler=ddim",
            "sample.guidance_scale=1.0", "train.progress_bar=false", "train.max_minutes=0",
            f"train.max_steps={steps}", "train.sample_every_n_steps=0", "train.checkpoint_every_n_steps=100000",
            f"model.text.cache_size={cache_size}", "seed=0", f"run_dir={run}"]
    start = time.perf_counter()
    assert main(argv) == 0
    info = json.loads((run / "model_info.json").read_text())
    return {"cache_size": cache_size, "mean_train_step_s": info["mean_train_step_s"],
            "fit_wall_s": round(time.perf_counter() - start, 2)}


def encode_timing(sd: Path, captions: list[str], rounds: int) -> dict:
    """Median seconds of one batch of captions encoded (no cache) and looked up (cache), interleaved."""
    import statistics

    from vfusion.text import PromptEncoder

    cold = PromptEncoder.from_folder(sd, cache_size=0)
    warm = PromptEncoder.from_folder(sd)
    warm.encode(captions)
    times: dict[str, list[float]] = {"encode": [], "cached": []}
    for _ in range(rounds):
        for name, enc in (("encode", cold), ("cached", warm)):
            start = time.perf_counter()
            enc.encode(captions)
            times[name].append(time.perf_counter() - start)
    return {f"{k}_batch_s": round(statistics.median(v), 5) for k, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    import torch

    from tests.caption_data import sidecar_tree

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sd = sd_sized_text_folder(work / "sd")
        data = sidecar_tree(work / "data", n=args.videos)
        from tests.caption_data import CAPTIONS

        text = encode_timing(sd, [CAPTIONS[k % len(CAPTIONS)] + f" {k}" for k in range(args.batch)], args.rounds)
        rows = [train(work, sd, data, args.steps, size, args.batch) for size in (10000, 0)]
    cached, uncached = rows
    saved = uncached["mean_train_step_s"] - cached["mean_train_step_s"]
    result = {"steps": args.steps, "videos": args.videos, "batch": args.batch, "text_encoder": "CLIPTextModel "
              "768 x 12 layers, 77 tokens (SD 1.x size, random)", "runs": rows,
              "saved_s_per_step": round(saved, 4),
              "saved_fraction": round(saved / uncached["mean_train_step_s"], 3),
              "text_part_of_a_step": text,
              "torch_threads": torch.get_num_threads()}
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
