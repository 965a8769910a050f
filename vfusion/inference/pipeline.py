"""``VideoFusionPipeline``: the one inference object, a ``diffusers.DiffusionPipeline`` for every registered model::

    pipe = VideoFusionPipeline.from_pretrained("runs/embedded_videofusion/pipeline")
    out = pipe(num_inference_steps=20, generator=torch.Generator().manual_seed(0))
    out.frames                      # (B, T, H, W, C) float32 in [0, 1] for output_type="np"

Components (``model_index.json``; safetensors, no pickles): ``base``, the image model in plain diffusers format,
loadable on its own (VideoFusion's base generator, or the stage-1 image model); ``residual``, VideoFusion's residual
generator; ``denoiser``, the whole network of the video UNet or the DiT; ``scheduler``, the run's noise process (a
DDIM config with its schedule and prediction type); an optional ``vae`` (``AutoencoderKL``); ``text_encoder`` /
``tokenizer`` of a text-conditioned base (prompts encoded by :class:`vfusion.text.PromptEncoder` as diffusers' Stable
Diffusion pipeline does); ``video_config``: model name, data facts, noise prior, sampling defaults, what was trained.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch
from diffusers import DiffusionPipeline
from diffusers.utils import BaseOutput

from vfusion.conditioning import class_cond
from vfusion.data.clips import SPATIAL_MODES, resize_clips
from vfusion.errors import UserError
from vfusion.rundir import check_sampling, sample_defaults

OUTPUT_TYPES = ("pt", "np", "pil", "latent")
# how given frames of another size are fitted to the model's frames; "none" refuses them
RESIZE_MODES = SPATIAL_MODES + ("none",)


@dataclass
class VideoFusionPipelineOutput(BaseOutput):
    """``frames``: ``pt`` (B, C, T, H, W) in [-1, 1] (the project's layout); ``np`` (B, T, H, W, C) float32
    in [0, 1]; ``pil`` a list (per video) of lists of PIL images; ``latent`` the sampler's output before
    the VAE (B, c, T, h, w), unclamped. ``class_labels``: (B,) or None."""

    frames: Union[torch.Tensor, np.ndarray, list]
    class_labels: Optional[torch.Tensor] = None


class VideoFusionPipeline(DiffusionPipeline):
    _optional_components = ["base", "residual", "denoiser", "vae", "text_encoder", "tokenizer"]

    def __init__(self, scheduler, base=None, residual=None, denoiser=None, vae=None, text_encoder=None,
                 tokenizer=None, video_config: Optional[dict] = None):
        super().__init__()
        self.register_modules(scheduler=scheduler, base=base, residual=residual, denoiser=denoiser, vae=vae,
                              text_encoder=text_encoder, tokenizer=tokenizer)
        self.register_to_config(video_config=dict(video_config or {}))
        self._process = None  # the DiffusionProcess (from the scheduler config unless handed in)
        self._spec = None     # data facts + process + noise prior, built once
        self._model = None    # the denoiser assembled from the components, built once
        self._prompts = None  # the PromptEncoder over text_encoder + tokenizer (its cache), built once

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # diffusers loads a component of a non-diffusers library only when its module is already
        # imported (it never imports code a folder names); ours are imported here, the registry's ones
        import importlib

        from vfusion.models.registry import MODELS

        for target in MODELS.values():
            importlib.import_module(target.split(":")[0])
        importlib.import_module("vfusion.models.residual_generator")
        kwargs.setdefault("low_cpu_mem_usage", False)  # plain loading: no accelerate needed, no notice about it
        return super().from_pretrained(*args, **kwargs)

    @classmethod
    def from_model(cls, model, process, video_config: dict, vae=None, prompt_encoder=None) -> "VideoFusionPipeline":
        """A pipeline around an in-memory model (its modules are shared, not copied)."""
        parts = dict(model.pipeline_components())
        if prompt_encoder is not None:
            parts.update(text_encoder=prompt_encoder.text_encoder, tokenizer=prompt_encoder.tokenizer)
        pipe = cls(scheduler=process.scheduler("ddim"), vae=vae, video_config=video_config, **parts)
        pipe._process, pipe._model, pipe._prompts = process, model, prompt_encoder
        return pipe

    @property
    def video_config(self) -> dict:
        return dict(self.config.video_config)

    @property
    def process(self):
        return self.spec().process

    def sample_defaults(self) -> dict:
        """The run's sampling settings (``video_config["sample"]``), the schema's
        (:class:`vfusion.config.SampleConfig`) for any it does not record."""
        return sample_defaults(self.video_config.get("sample"))

    def spec(self):
        """The model's data facts, the run's DiffusionProcess and its noise prior."""
        if self._spec is None:
            from vfusion.diffusion.noise import noise_prior_from_config
            from vfusion.diffusion.factory import make_process
            from vfusion.models.spec import ModelSpec

            vc = self.video_config
            process = self._process or make_process(dict(self.scheduler.config,
                                                             _class_name=type(self.scheduler).__name__))
            prior = noise_prior_from_config(vc.get("noise") or {"prior": "independent"}, int(vc["num_frames"]))
            self._spec = ModelSpec(int(vc["in_channels"]), int(vc["sample_size"]), int(vc["num_frames"]),
                                   int(vc.get("num_classes", 0)), process=process, noise=prior,
                                   base=dict(vc.get("base") or {}))
        return self._spec

    def model(self):
        """The denoiser assembled from the components (VideoFusion: base + residual)."""
        if self._model is None:
            from vfusion.models.registry import assemble_model

            comps = {k: getattr(self, k) for k in ("base", "residual", "denoiser") if getattr(self, k, None) is not None}
            self._model = assemble_model(self.video_config["model"], comps, self.spec())
        return self._model

    @property
    def text_conditioned(self) -> bool:
        return bool(self.spec().base.get("text"))

    def prompt_encoder(self):
        """The PromptEncoder over this pipeline's text encoder and tokenizer (text-conditioned bases)."""
        if self._prompts is None:
            if self.text_encoder is None or self.tokenizer is None:
                raise UserError("this pipeline's base is text-conditioned but the folder has no text_encoder/ and "
                                "tokenizer/; export it again from its run")
            from vfusion.text import PromptEncoder

            self._prompts = PromptEncoder(self.tokenizer, self.text_encoder)
        return self._prompts

    def condition(self, labels: Optional[torch.Tensor], prompt, batch_size: int, device, negative_prompt=None):
        """The Cond of a batch: class labels, or (text-conditioned base) the prompt states — the given
        prompt(s), else each class's prompt (the run's template), else the run's one prompt. The null
        condition of guidance is the empty prompt, or ``negative_prompt`` (one for all, or one per video)."""
        from vfusion.conditioning import Cond

        if not self.text_conditioned:
            if prompt is not None or negative_prompt is not None:
                raise UserError("this model's base is not text-conditioned, so it takes no prompt; choose classes "
                                "with class_labels (--class) instead")
            return class_cond(labels.to(device) if labels is not None else None)
        table = list(self.spec().base.get("prompts") or [""])
        if prompt is not None:
            prompts = per_video(prompt, batch_size, "prompts")
        elif labels is not None and len(table) > 1:
            prompts = [table[int(v)] for v in labels]
        else:
            prompts = [table[0]] * batch_size
        enc = self.prompt_encoder()
        enc.to(device)
        states, mask = enc.encode(prompts)
        if negative_prompt is None:
            null_states, null_mask = enc.encode([""])
        else:
            null_states, null_mask = enc.encode(per_video(negative_prompt, batch_size, "negative prompts"))
        return Cond(class_labels=labels if prompt is None else None, text_embeds=states, text_mask=mask,
                    null_text_embeds=null_states, null_text_mask=null_mask).to(device)

    # ---- generation ----------------------------------------------------------------------------
    def default_labels(self, batch_size: int, start_index: int = 0) -> Optional[torch.Tensor]:
        """Labels cycling through the classes (video j gets class j mod K); None when unconditional."""
        k = int(self.video_config.get("num_classes", 0))
        return torch.arange(start_index, start_index + batch_size) % k if k else None

    @torch.no_grad()
    def __call__(self, batch_size: Optional[int] = None, class_labels: Optional[Sequence[int] | torch.Tensor] = None,
                 num_inference_steps: Optional[int] = None, sampler: Optional[str] = None,
                 guidance_scale: Optional[float] = None, generator: Optional[torch.Generator] = None,
                 output_type: str = "np", return_dict: bool = True, start_index: int = 0,
                 callback: Optional[Callable[[int], None]] = None, progress: bool = True,
                 prompt: Optional[Union[str, Sequence[str]]] = None,
                 negative_prompt: Optional[Union[str, Sequence[str]]] = None, latents: Optional[torch.Tensor] = None,
                 tasks: Sequence = (), resize: str = "crop"):
        """Sample videos. Unset arguments take the run's defaults (:meth:`sample_defaults`).

        ``class_labels`` (class-conditional models) fixes the batch's classes; otherwise video j of the
        batch gets class (``start_index`` + j) mod K. ``prompt`` (text-conditioned bases only): free
        text for every video, or one per video; ``negative_prompt`` (the same forms) replaces the empty
        prompt as the condition guidance steers away from (``guidance_scale`` > 1). ``latents``: the initial noise (B, C, T, h, w) instead
        of a draw from the run's prior. ``callback(step)`` is called after each denoising step.

        ``tasks``: what the sampling loop does besides sampling from noise (:mod:`vfusion.diffusion.task`),
        their clips (B, C, T, H, W) in [-1, 1] (:mod:`vfusion.inference.tasks` builds them for image-to-video,
        extension, interpolation and editing):

        - :class:`~vfusion.diffusion.known.KnownFramesTask` ``(frames, mask, jumps)``: the frames ``mask``
          ((T,) or (B, T) bool) marks are given; they are held at their forward-noised versions all along and
          come back unchanged; ``jumps``: RePaint's resampling, that many extra passes per step;
        - :class:`~vfusion.diffusion.edit.EditTask` ``(video, strength, inversion)``: SDEdit
          (:mod:`vfusion.diffusion.edit`), ``strength`` in [0, 1] (0 returns the video, 1 is unconditional
          sampling from the same seed); ``inversion=True`` reaches the start by DDIM inversion;
        - :class:`~vfusion.diffusion.freeinit.FreeInitTask` ``(iters, order, d_s, d_t)``: FreeInit
          (``iters=0`` is off); without one, sampling from noise takes the run's ``free_init_*``.

        Clips of another height and width are fitted to the model's frames (:meth:`fit_input`):
        ``resize="crop"`` as training clips are (the center square, resized), ``"stretch"`` the whole frame,
        ``"none"`` refuses them.
        """
        from vfusion.diffusion.edit import EditTask
        from vfusion.diffusion.freeinit import FreeInitTask
        from vfusion.diffusion.loop_settings import LoopSettings
        from vfusion.diffusion.sampling import sample_loop

        vc = self.video_config
        defaults = self.sample_defaults()
        tasks = tuple(tasks)
        if output_type not in OUTPUT_TYPES:
            raise UserError(f"output_type '{output_type}' is not one of {', '.join(OUTPUT_TYPES)}")
        num_classes = int(vc.get("num_classes", 0))
        labels = None
        if class_labels is not None:
            labels = torch.as_tensor(class_labels, dtype=torch.long).flatten()
            if num_classes == 0:
                raise UserError("this model is unconditional; it takes no class labels")
            bad = [int(v) for v in labels if not 0 <= int(v) < num_classes]
            if bad:
                raise UserError(f"class labels {bad} are outside 0..{num_classes - 1}")
            if batch_size is not None and batch_size != labels.numel():
                raise UserError(f"batch_size={batch_size} but {labels.numel()} class labels were given")
            batch_size = labels.numel()
        if prompt is not None and not isinstance(prompt, str) and batch_size is None:
            batch_size = len(prompt)
        for given in (latents, *(task.batch_clip for task in tasks)):
            if given is not None and batch_size is None:
                batch_size = int(given.shape[0])
        batch_size = int(batch_size if batch_size is not None else defaults["batch_size"])
        settings = LoopSettings(
            sampler=sampler or defaults["sampler"],
            steps=int(num_inference_steps if num_inference_steps is not None else defaults["steps"]),
            guidance_scale=float(guidance_scale if guidance_scale is not None else defaults["guidance_scale"]),
            device=self.device, progress=progress)
        check_sampling(batch_size, settings.steps, settings.guidance_scale, self.process.num_train_timesteps)
        if not any(isinstance(task, (FreeInitTask, EditTask)) for task in tasks):  # the run's, from noise only
            free_init = FreeInitTask(int(defaults["free_init_iters"]), int(defaults["free_init_order"]),
                                     float(defaults["free_init_ds"]), float(defaults["free_init_dt"]))
            tasks += (free_init,) if free_init.iters else ()
        if labels is None and num_classes and prompt is None:
            labels = self.default_labels(batch_size, start_index)

        model = self.model()
        process, prior = self.process, self.spec().noise
        device = self.device
        model.to(device).eval()
        shape = self.sample_shape(batch_size)
        cond = self.condition(labels, prompt, batch_size, device, negative_prompt)
        tasks = tuple(task.encoded(lambda clip, name: self._to_model_space(clip, shape, name, resize))
                      for task in tasks)
        x = sample_loop(model, process, prior, shape, settings, cond=cond, generator=generator, latents=latents,
                        tasks=tasks, callback=callback)
        labels = labels.cpu() if labels is not None else None
        if output_type == "latent":
            return VideoFusionPipelineOutput(frames=x, class_labels=labels) if return_dict else (x, labels)
        if self.vae is not None:
            x = self._codec().decode(x)
        videos = x.float().clamp(-1, 1).cpu()
        frames = format_frames(videos, output_type)
        if not return_dict:
            return (frames, labels)
        return VideoFusionPipelineOutput(frames=frames, class_labels=labels)

    def sample_shape(self, batch_size: int) -> tuple[int, int, int, int, int]:
        """The shape (B, C, T, h, w) the sampler works in (latents for a latent model)."""
        vc = self.video_config
        size = int(vc["sample_size"])
        return (int(batch_size), int(vc["in_channels"]), int(vc["num_frames"]), size, size)

    def pixel_shape(self, batch_size: int) -> tuple[int, int, int, int, int]:
        """The shape (B, C, T, H, W) of the clips this pipeline makes, in pixels (after the VAE)."""
        vc = self.video_config
        if self.vae is None:
            return self.sample_shape(batch_size)
        c = int(self.vae.config.in_channels)
        size = int((vc.get("trained") or {}).get("resolution") or
                   int(vc["sample_size"]) * 2 ** (len(self.vae.config.block_out_channels) - 1))
        return (int(batch_size), c, int(vc["num_frames"]), size, size)

    def fit_input(self, clip: torch.Tensor, name: str, resize: str = "crop") -> torch.Tensor:
        """Clips (B, C, T, H, W) in [-1, 1] with the model's channels, at the model's height and width: other
        sizes are center-cropped and resized as training clips are (``crop``, :mod:`vfusion.data.clips`),
        resized whole (``stretch``) or refused (``none``)."""
        if resize not in RESIZE_MODES:
            raise UserError(f"resize '{resize}' is not one of {', '.join(RESIZE_MODES)}")
        clip = torch.as_tensor(clip, dtype=torch.float32)
        _, c, _, h, w = self.pixel_shape(1)
        if clip.dim() != 5 or clip.shape[1] != c:
            raise UserError(f"{name} has shape {tuple(clip.shape)}; give clips (batch, {c} channels, frames, "
                            f"height, width)")
        if tuple(clip.shape[3:]) == (h, w):
            return clip
        if resize == "none":
            raise UserError(f"{name} has frames of {clip.shape[3]}x{clip.shape[4]} (height x width) but the model "
                            f"makes {h}x{w}; resize it to {h}x{w}, or fit it with resize='crop' or 'stretch'")
        return resize_clips(clip, h, resize)

    def _to_model_space(self, clip: torch.Tensor, shape, name: str, resize: str = "crop") -> torch.Tensor:
        """A clip (B, C, T, H, W) in [-1, 1] -> the sampler's space (the VAE's latents for a latent model)."""
        clip = self.fit_input(clip, name, resize)
        expected = self.pixel_shape(shape[0])
        if tuple(clip.shape) != expected:
            raise UserError(f"{name} has shape {tuple(clip.shape)} but this model makes clips of {expected} "
                            f"(batch, channels, frames, height, width); give {expected[0]} clips of {expected[2]} "
                            f"frames")
        clip = clip.to(self.device)
        return self._codec().encode(clip) if self.vae is not None else clip

    def _codec(self):
        """The VAE with the run's scaling factor (latent models)."""
        from vfusion.data.latents import LatentCodec

        return LatentCodec(self.vae, self.video_config.get("vae_scaling_factor"))


def per_video(text: Union[str, Sequence[str]], batch_size: int, what: str) -> list[str]:
    """One string for every video, or one per video (their count checked)."""
    texts = [text] * batch_size if isinstance(text, str) else [str(p) for p in text]
    if len(texts) != batch_size:
        raise UserError(f"{len(texts)} {what} were given for a batch of {batch_size}")
    return texts


def format_frames(videos: torch.Tensor, output_type: str):
    """``(B, C, T, H, W)`` in [-1, 1] -> the pipeline's output formats."""
    if output_type == "pt":
        return videos
    arr = ((videos + 1) / 2).clamp(0, 1).permute(0, 2, 3, 4, 1).numpy().astype(np.float32)  # (B, T, H, W, C)
    if output_type == "np":
        return arr
    from PIL import Image

    return [[Image.fromarray((f * 255).round().astype(np.uint8)) for f in video] for video in arr]
