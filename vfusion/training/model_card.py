"""The model card (README.md) written into every exported pipeline folder."""

from __future__ import annotations

import json
from typing import Optional

NAMES = {"videofusion": "VideoFusion (decomposed noise: base generator + residual generator)",
         "video_unet": "inflated video UNet (independent-noise baseline)",
         "dit": "spacetime-patch DiT (Latte-style baseline)", "image_unet": "image UNet (stage-1 base generator)"}


def model_card(video_config: dict, use_ema: bool, metrics: Optional[dict] = None) -> str:
    vc = video_config
    trained = vc.get("trained", {})
    classes = vc.get("class_names") or []
    noise = vc.get("noise", {})
    lines = [
        f"# {trained.get('experiment', 'vfusion')} — {NAMES.get(vc.get('model'), vc.get('model'))}", "",
        "A `vfusion.VideoFusionPipeline` (diffusers `DiffusionPipeline`; weights as safetensors).", "",
        "```python", "import torch", "from vfusion import VideoFusionPipeline",
        "pipe = VideoFusionPipeline.from_pretrained(\"PATH/TO/THIS/FOLDER\")",
        "out = pipe(num_inference_steps=20, generator=torch.Generator().manual_seed(0))",
        "out.frames  # (B, T, H, W, C) in [0, 1]", "```", "",
        "## What was trained", "",
        f"- model: `{vc.get('model')}`; weights: {'EMA' if use_ema else 'raw (no EMA)'}",
        f"- data: `{trained.get('dataset')}` at {trained.get('resolution')} px, {vc.get('num_frames')} frames, "
        f"{vc.get('in_channels')} channels at {vc.get('sample_size')}x{vc.get('sample_size')} "
        f"({'VAE latents' if vc.get('vae_scaling_factor') else 'pixels'})",
        f"- classes: {len(classes)}" + (f" ({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})"
                                         if classes else " (unconditional)"),
        f"- noise prior: `{noise.get('prior')}` " + json.dumps({k: v for k, v in noise.items() if k != 'prior'}),
        f"- training steps: {trained.get('global_step')}, seed {trained.get('seed')}",
        f"- sampling defaults: {json.dumps(vc.get('sample', {}))}", "",
    ]
    if metrics:
        lines += ["## Metrics (the run's metrics.json)", ""]
        for k, v in (metrics.get("metrics") or {}).items():
            lines.append(f"- {k}: {v:.6g}" if isinstance(v, (int, float)) else f"- {k}: {v}")
        protocol = metrics.get("protocol")
        if protocol:
            lines += ["", "Protocol:", "", "```json", json.dumps(protocol, indent=1)[:4000], "```"]
        lines.append("")
    return "\n".join(lines)
