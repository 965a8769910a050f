"""Sora's tasks through a :class:`~vfusion.inference.pipeline.VideoFusionPipeline`: image-to-video,
extension, interpolation and editing, for every model of the registry.

Each task builds the pipeline's task object (a :class:`~vfusion.diffusion.known.KnownFramesTask` for the frames it
is given, an :class:`~vfusion.diffusion.edit.EditTask` for an edit) and returns a ``VideoFusionPipelineOutput``.
Inputs are images (B, C, H, W) or (C, H, W), clips (B, C, T, H, W) or (C, T, H, W), values in [-1, 1], of any
height and width: ``resize`` fits them to the model's frames (``crop``, the default, as training clips are;
``stretch``; ``none`` refuses another size); a single image or clip is used for every video of the batch. ``**call``
goes to the pipeline. :func:`image_to_video` takes the image as VideoFusion's keyframe (the middle frame: the base
generator denoises it, noised with the clip's shared base noise b) or as the first frame (any model);
:func:`extend` goes forwards (the clip's last k frames start each new chunk) or backwards (its first k end it), in
chunks to any length, and VideoFusion can keep one shared base noise b for all chunks.
"""

from __future__ import annotations

from typing import Optional

import torch

from vfusion.diffusion.edit import EditTask
from vfusion.diffusion.known import KnownFramesTask
from vfusion.errors import UserError

TASKS = ("i2v", "extend", "interpolate", "edit")
I2V_PLACES = ("auto", "keyframe", "first")


class TaskError(UserError, ValueError):
    """Task inputs that do not fit the model."""


def _batch(x: torch.Tensor, dims: int, name: str, batch_size: Optional[int]) -> torch.Tensor:
    """``x`` with a batch dimension (``dims`` = the dims of one item), repeated to ``batch_size``."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() == dims:
        x = x.unsqueeze(0)
    if x.dim() != dims + 1:
        raise TaskError(f"{name} has shape {tuple(x.shape)}; expected {dims} dims, or {dims + 1} with a batch")
    if batch_size is not None and x.shape[0] != batch_size:
        if x.shape[0] != 1:
            raise TaskError(f"{name} holds {x.shape[0]} items for a batch of {batch_size}")
        x = x.expand(batch_size, *x.shape[1:])
    return x.contiguous()


def _known(pipe, batch: int, placed: dict[int, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """A :class:`KnownFramesTask`'s frames and mask, with frame i set to ``placed[i]`` (B, C, H, W)."""
    shape = pipe.pixel_shape(batch)
    frames = torch.zeros(shape)
    mask = torch.zeros(shape[2], dtype=torch.bool)
    for i, f in placed.items():
        frames[:, :, i] = f
        mask[i] = True
    return frames, mask


def _pt(call: dict) -> tuple[dict, str]:
    """The call's arguments with output_type "pt" (tasks assemble clips first), and the one asked for."""
    call = dict(call)
    return call, call.pop("output_type", "np")


def _with(task, call: dict) -> dict:
    """The call's arguments with ``task`` before the caller's own tasks."""
    return {**call, "tasks": (task, *call.get("tasks", ()))}


def _output(frames: torch.Tensor, labels, output_type: str):
    from vfusion.inference.pipeline import VideoFusionPipelineOutput, format_frames

    if output_type == "latent":
        raise TaskError("tasks return pixels; use output_type pt, np or pil")
    return VideoFusionPipelineOutput(frames=format_frames(frames.float().clamp(-1, 1).cpu(), output_type),
                                     class_labels=labels)


def _num_frames(pipe) -> int:
    return int(pipe.video_config["num_frames"])


def is_videofusion(pipe) -> bool:
    return pipe.video_config.get("model") == "videofusion"


def image_place(pipe, at: str = "auto") -> tuple[str, int]:
    """Where image-to-video puts the image: ``(place, frame index)``; ``auto`` is the keyframe (the middle
    frame T // 2) for VideoFusion, else the first frame."""
    if at not in I2V_PLACES:
        raise TaskError(f"image-to-video places the image at one of {', '.join(I2V_PLACES)}, not '{at}'")
    if at == "auto":
        at = "keyframe" if is_videofusion(pipe) else "first"
    if at == "keyframe" and not is_videofusion(pipe):
        raise TaskError(f"only VideoFusion has a keyframe; this pipeline is '{pipe.video_config.get('model')}': "
                        "use at='first' (--at first)")
    return at, (_num_frames(pipe) // 2 if at == "keyframe" else 0)


def image_to_video(pipe, image: torch.Tensor, at: str = "auto", resample_jumps: int = 0, resize: str = "crop",
                   **call):
    """A clip that contains ``image``: as VideoFusion's keyframe (``at="keyframe"``, the middle frame
    k = T // 2) or as the first frame (``at="first"``, any model). ``auto``: the keyframe for VideoFusion,
    else the first frame."""
    _, index = image_place(pipe, at)
    image = pipe.fit_input(_batch(image, 3, "the image", call.pop("batch_size", None)).unsqueeze(2), "the image",
                           resize)[:, :, 0]
    frames, mask = _known(pipe, image.shape[0], {index: image})
    call, out_type = _pt(call)
    out = pipe(output_type="pt", **_with(KnownFramesTask(frames, mask, resample_jumps), call))
    return _output(out.frames, out.class_labels, out_type)


def _frames_of(x: torch.Tensor, name: str, batch_size: Optional[int]) -> torch.Tensor:
    """An image (C, H, W), images (B, C, H, W) or clips (B, C, t, H, W) -> clips (B, C, t, H, W)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    if x.dim() in (3, 4):
        x = x.unsqueeze(-3)
    if x.dim() == 4:  # one image became (C, 1, H, W)
        x = x.unsqueeze(0)
    if x.dim() != 5:
        raise TaskError(f"{name} has shape {tuple(x.shape)}; give an image (C, H, W), images (B, C, H, W) or "
                        "clips (B, C, t, H, W)")
    return _batch(x, 4, name, batch_size)


def interpolate(pipe, first: torch.Tensor, last: torch.Tensor, resample_jumps: int = 0, resize: str = "crop",
                **call):
    """The frames between ``first`` and ``last`` (each an image (C, H, W), images (B, C, H, W) or clips
    (B, C, t, H, W)), placed at the start and the end of one clip of the model's length: that clip."""
    bs = call.pop("batch_size", None)
    first = _frames_of(first, "the first frames", bs)
    last = _frames_of(last, "the last frames", bs)
    if first.shape[0] != last.shape[0]:
        n = max(first.shape[0], last.shape[0])
        first, last = _batch(first, 4, "the first frames", n), _batch(last, 4, "the last frames", n)
    first, last = pipe.fit_input(first, "the first frames", resize), pipe.fit_input(last, "the last frames", resize)
    t = _num_frames(pipe)
    a, b = first.shape[2], last.shape[2]
    if a + b >= t:
        raise TaskError(f"{a} first + {b} last frames leave nothing to generate in a clip of {t}; give fewer "
                        "context frames")
    placed = {i: first[:, :, i] for i in range(a)}
    placed.update({t - b + j: last[:, :, j] for j in range(b)})
    frames, mask = _known(pipe, first.shape[0], placed)
    call, out_type = _pt(call)
    out = pipe(output_type="pt", **_with(KnownFramesTask(frames, mask, resample_jumps), call))
    return _output(out.frames, out.class_labels, out_type)


def extend(pipe, video: torch.Tensor, context: Optional[int] = None, direction: str = "forward", chunks: int = 1,
           reuse_base: bool = False, resample_jumps: int = 0, generator: Optional[torch.Generator] = None,
           resize: str = "crop", **call):
    """``video`` (B, C, t, H, W) extended by ``chunks`` clips of T − ``context`` new frames each.

    Forwards, each chunk starts with the last ``context`` frames made so far; backwards, it ends with the
    first ones (``context`` unset: half the model's clip length). The result is the input and the new
    frames, in time order. ``reuse_base`` (VideoFusion
    with the decomposed prior): every chunk's initial noise keeps the first chunk's shared base b (its
    residuals are fresh), so the chunks share their base noise as the frames of one clip do.
    """
    from vfusion.diffusion.noise import compose

    if direction not in ("forward", "backward"):
        raise TaskError(f"direction must be forward or backward, not '{direction}'")
    if int(chunks) != chunks or chunks < 1:
        raise TaskError(f"chunks must be an integer >= 1, got {chunks}")
    t = _num_frames(pipe)
    context = t // 2 if context is None else context
    if not 1 <= int(context) < t:
        raise TaskError(f"context must be between 1 and {t - 1} frames (the model makes clips of {t}), got {context}")
    context = int(context)
    video = pipe.fit_input(_batch(video, 4, "the video", call.pop("batch_size", None)), "the video", resize)
    if video.shape[2] < context:
        raise TaskError(f"the video has {video.shape[2]} frames, fewer than the {context} context frames; give a "
                        f"longer video or a smaller context")
    prior = pipe.spec().noise
    if getattr(prior, "time_dependent", False):
        raise TaskError("extend draws each chunk's initial noise itself, which it cannot do yet for a prior whose λ "
                        "depends on t (noise.value_T); extend a run whose λ is the same at every t")
    if reuse_base and getattr(prior, "lambdas", None) is None:
        raise TaskError(f"reuse_base keeps VideoFusion's shared base noise, which the {prior!r} prior does not have; "
                        "use a decomposed prior or reuse_base=False")
    bsz = video.shape[0]
    shape = pipe.sample_shape(bsz)
    call, out_type = _pt(call)
    if "latents" in call:
        raise TaskError("extend draws each chunk's initial noise itself; it takes no latents")
    made, base, labels = video, None, None
    for _ in range(int(chunks)):
        given = made[:, :, -context:] if direction == "forward" else made[:, :, :context]
        placed = range(context) if direction == "forward" else range(t - context, t)
        frames, mask = _known(pipe, bsz, {i: given[:, :, j] for j, i in enumerate(placed)})
        draw = prior.sample(shape, generator=generator, device=pipe.device)
        latents = draw.eps
        if reuse_base:
            if base is None:
                base = draw.base
            else:
                latents = compose(base, draw.residual, prior.lambdas)
                k = prior.keyframe
                latents[:, :, k:k + 1] = base
        out = pipe(latents=latents, generator=generator, output_type="pt",
                   **_with(KnownFramesTask(frames, mask, resample_jumps), call))
        new = out.frames.to(made.dtype)
        labels = out.class_labels
        made = torch.cat([made, new[:, :, context:]], dim=2) if direction == "forward" else \
            torch.cat([new[:, :, :t - context], made], dim=2)
    return _output(made, labels, out_type)


def edit(pipe, video: torch.Tensor, strength: float = 0.5, inversion: bool = False, resize: str = "crop", **call):
    """SDEdit of ``video`` (B, C, T, H, W) at ``strength`` towards the class / prompt given in ``call``."""
    video = pipe.fit_input(_batch(video, 4, "the video", call.pop("batch_size", None)), "the video", resize)
    t = _num_frames(pipe)
    if video.shape[2] != t:
        raise TaskError(f"the video has {video.shape[2]} frames; an edit takes a clip of the model's {t} frames")
    call, out_type = _pt(call)
    out = pipe(output_type="pt", **_with(EditTask(video, strength, inversion), call))
    return _output(out.frames, out.class_labels, out_type)
