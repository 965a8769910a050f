"""Structured experiment configuration (OmegaConf dataclasses).

One YAML file under ``configs/`` fully specifies an experiment. It is merged onto
the :class:`ExperimentConfig` schema, so a misspelt key or a value of the wrong
type fails at load time with the key's full name. Command-line ``key=value``
overrides (dotted keys, e.g. ``train.max_steps=200``) are merged last. The
resolved config is written to every run directory and read back by ``sample``,
``evaluate`` and ``study``, so model keys are never repeated on the command line.

This module is the schema only: the checks beyond types belong to the package that owns each
section (its registry) and are run together by :func:`vfusion.experiment.validate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vfusion.errors import UserError


class ConfigError(UserError, ValueError):
    """A config file or override that does not match the schema."""


@dataclass
class DataConfig:
    # embedded | ucf101 | sky | folder | captions | webvid (see vfusion/data/registry.py)
    dataset: str = "embedded"
    # Dataset root. For ``embedded`` it is where the procedural dataset is written
    # (in the UCF-101 layout) the first time it is needed.
    root: str = "data/embedded"
    # UCF-101 only: explicit path of the ``ucfTrainTestlist`` folder (else searched for).
    splits_dir: Optional[str] = None
    fold: int = 1
    # train | test | all
    split: str = "train"
    # split used for held-out statistics (evaluation, real-vs-real)
    eval_split: str = "test"
    num_frames: int = 16
    frame_stride: int = 1
    resolution: int = 32
    # what to do with videos shorter than num_frames * frame_stride: skip | loop | lower_stride
    short_policy: str = "lower_stride"
    random_flip: bool = True
    # an unreadable file raises instead of being skipped with a warning
    strict: bool = False
    # class labels from the dataset are used (class-conditional generation)
    class_conditional: bool = True
    # folder dataset: take labels from the first-level subfolder names
    labels_from_subfolders: bool = False
    # captioned datasets (captions, webvid): the CSV of captions / WebVid metadata (relative to root or absolute);
    # null: captions.csv in the root, else sidecar NAME.txt files (captions); the CSV in the root (webvid)
    captions_file: Optional[str] = None
    # a video without a usable caption (missing, empty, unreadable): error | skip (left out and counted)
    missing_caption: str = "error"
    # captioned datasets: probability that a clip's caption is replaced by the empty prompt in training
    # (classifier-free guidance); model.class_dropout plays this part for class labels
    caption_dropout: float = 0.1
    # none | clips | latents
    cache: str = "none"
    cache_dir: str = "data/cache"
    # local diffusers AutoencoderKL directory: when set, the model works on VAE latents
    vae_path: Optional[str] = None
    vae_scaling_factor: Optional[float] = None
    batch_size: int = 16
    # -1: choose automatically (min(4, cpu count))
    num_workers: int = -1
    # embedded dataset: how many clips per class in each split, and its seed
    embedded_train_per_class: int = 64
    embedded_test_per_class: int = 16
    embedded_num_classes: int = 4
    embedded_size: int = 64
    embedded_length: int = 40
    embedded_seed: int = 0
    # data.cache: clips stored per video (evenly spread starts); training draws one of them per access
    cache_clips_per_video: int = 1


@dataclass
class NoiseConfig:
    """The noise prior (``vfusion.diffusion.priors``): the λ schedule of the decomposed prior, α of PYoCo's."""

    # decomposed | independent | pyoco_mixed | pyoco_progressive (see vfusion/diffusion/priors.py);
    # VideoFusion needs decomposed (its keyframe noise is the shared base)
    prior: str = "decomposed"
    # PYoCo's α (pyoco_mixed: frame correlation α²/(1+α²); pyoco_progressive: (α/sqrt(1+α²))^|i−j|);
    # null: the prior's default (mixed 1, progressive 2). Only the PYoCo priors take it.
    alpha: Optional[float] = None
    # constant | linear | exponential | cosine | list
    schedule: str = "constant"
    # constant: λ of every non-key frame; decays: λ of the keyframe's neighbours
    value: float = 0.5
    # decays: λ of the frames farthest from the keyframe (linear, cosine)
    min_value: float = 0.0
    # exponential: factor per frame of distance
    rate: float = 0.7
    # list: one λ per frame in per_frame (keyframe entry must be 1)
    per_frame: Optional[list[float]] = None
    # λ that depends on the noise level: the keys above give λ at t = 0, these the same schedule's λ at
    # t = T (value_T in place of value, min_value_T of min_value; per_frame_T for a list), and λ moves
    # linearly between them with t / (T - 1) (σ for rectified flow). null: λ is the same at every t.
    value_T: Optional[float] = None
    min_value_T: Optional[float] = None
    per_frame_T: Optional[list[float]] = None


@dataclass
class DiffusionConfig:
    """The noise process. Unset keys (null) come from the base checkpoint's own
    ``scheduler/scheduler_config.json`` when ``model.base.pretrained`` has one, else from the
    project's defaults (in brackets); a key set here that differs from the checkpoint's value
    is an error unless ``override_checkpoint`` is true. The run's ``config.yaml`` holds the
    resolved values (see vfusion/diffusion/resolve.py)."""

    # ddpm (variance-preserving diffusion) | flow (rectified flow)   [ddpm]
    kind: Optional[str] = None
    num_train_timesteps: Optional[int] = None      # [1000]
    beta_schedule: Optional[str] = None            # [squaredcos_cap_v2]
    beta_start: Optional[float] = None             # [0.0001]
    beta_end: Optional[float] = None               # [0.02]
    clip_sample: Optional[bool] = None             # [true]
    # epsilon | v_prediction | sample: what every network of the run is trained to predict   [epsilon]
    prediction_type: Optional[str] = None
    timestep_spacing: Optional[str] = None         # [leading]
    steps_offset: Optional[int] = None             # [0]
    set_alpha_to_one: Optional[bool] = None        # [true]
    rescale_betas_zero_snr: Optional[bool] = None  # [false]
    thresholding: Optional[bool] = None            # [false]
    # rectified flow: the sampling σ-grid shift of FlowMatchEulerDiscreteScheduler   [1.0]
    shift: Optional[float] = None
    # keys set here win over a base checkpoint's scheduler (with a warning) instead of failing
    override_checkpoint: bool = False


@dataclass
class UNetConfig:
    """A diffusers 2D UNet, loaded from a directory or built from these keys."""

    # local diffusers checkpoint directory (a model dir or a pipeline dir)
    pretrained: Optional[str] = None
    # subfolder inside ``pretrained`` (e.g. ``unet``); None: auto-detect
    subfolder: Optional[str] = None
    # unet2d (diffusers UNet2DModel) | unet2d_condition (UNet2DConditionModel)
    arch: str = "unet2d"
    block_out_channels: list[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    # use attention in the two lowest-resolution levels
    attention: bool = True
    # with attention: the feature-map sizes that get it, e.g. [8] for only the 8x8 level of a 32x32 model
    # (each level halves the size; the middle block runs at the smallest); null: the two smallest levels
    attention_resolutions: Optional[list[int]] = None
    norm_num_groups: int = 8


@dataclass
class BaseGeneratorConfig(UNetConfig):
    # learning-rate multiplier of the base generator's parameter group
    lr_mult: float = 0.1
    freeze: bool = False
    # a class-conditional pretrained DiT on class-conditional data: fresh (a new class table per
    # block, each row starting as the checkpoint's null class) | checkpoint (dataset class i is
    # checkpoint id class_ids[i], or the id whose id2label name matches the class name)
    class_map: str = "fresh"
    class_ids: Optional[list[int]] = None


@dataclass
class TextConfig:
    """Prompts for a text-conditioned base (a folder with text_encoder/ and tokenizer/)."""

    # the prompt of each class ({} is the class name in words: ApplyEyeMakeup -> apply eye makeup)
    template: str = "a video of {}"
    # the prompt of every clip when the data is unconditional; null: the dataset's own
    # (vfusion/data/registry.py, e.g. Sky Time-lapse: "a time-lapse video of the sky")
    prompt: Optional[str] = None
    # captioned data: the encoded states of this many captions are kept (least recently used leave first),
    # so the frozen text encoder runs once per caption instead of every step; 0: encode every step
    cache_size: int = 10000
    # a fresh base (model.base.pretrained unset) made text-conditioned (a UNet with cross-attention): a folder
    # with tokenizer/ and text_encoder/, or "random": a small CLIP text model drawn from random_seed,
    # random_width wide and random_layers deep (vfusion/text_random.py). Frozen either way, and saved with
    # the stage-1 base, whose own encoder a run with model.base.pretrained uses instead
    encoder: Optional[str] = None
    random_width: int = 32
    random_layers: int = 2
    random_seed: int = 0


@dataclass
class ResidualGeneratorConfig(UNetConfig):
    block_out_channels: list[int] = field(default_factory=lambda: [16, 32, 32])
    attention: bool = False
    # none | conv | attention: one zero-initialised temporal layer (diffusers' TemporalConvLayer or
    # AnimateDiffTransformer3D, as in the video UNet) at the bottleneck (see vfusion.models.residual_generator)
    temporal: str = "none"
    # where: null for the one layer at the bottleneck; or feature-map sizes (e.g. [16, 8] at 32x32), and a
    # temporal layer follows every spatial unit (resnet) of the levels of those sizes, as in the video UNet
    temporal_resolutions: Optional[list[int]] = None
    # heads of the temporal attention (must divide the last block width)
    temporal_heads: int = 4
    # true means temporal: conv; read so that configs and saved run configs that set it still load
    temporal_mixing: bool = False
    # embedding size of the frame index
    frame_embed_dim: int = 64


@dataclass
class VideoUNetConfig:
    """Independent-noise baseline: the base UNet inflated with temporal layers."""

    # conv | attention | both: diffusers' TemporalConvLayer (kernel 3, fixed by diffusers)
    # and/or AnimateDiffTransformer3D after every spatial unit (see vfusion.models.video_unet)
    temporal_layers: str = "both"
    # heads of the temporal attention (must divide every block width)
    attention_heads: int = 4


@dataclass
class DiTConfig:
    """Spacetime-patch DiT baseline (Latte/Sora style)."""

    # tiny (64, 4, 4) | S (384, 12, 6) | B (768, 12, 12): presets for (hidden size, depth,
    # heads); custom values win when > 0. depth counts all blocks, spatial + temporal
    # alternating (Latte-S: 12 = 6 + 6), so it must be even.
    size: str = "tiny"
    hidden_size: int = 0
    depth: int = 0
    num_heads: int = 0
    # spatial patch (must divide the frame size) and temporal patch (must divide num_frames;
    # > 1: tubelets of that many frames)
    patch_size: int = 4
    temporal_patch_size: int = 1


@dataclass
class ModelConfig:
    # videofusion | video_unet | dit | image_unet (stage 1): see vfusion/models/registry.py
    name: str = "videofusion"
    base: BaseGeneratorConfig = field(default_factory=BaseGeneratorConfig)
    residual: ResidualGeneratorConfig = field(default_factory=ResidualGeneratorConfig)
    video_unet: VideoUNetConfig = field(default_factory=VideoUNetConfig)
    dit: DiTConfig = field(default_factory=DiTConfig)
    text: TextConfig = field(default_factory=TextConfig)
    # probability of dropping the class label / prompt in training (classifier-free guidance)
    class_dropout: float = 0.1


@dataclass
class OptimConfig:
    lr: float = 2e-4
    weight_decay: float = 0.0
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_steps: int = 50
    # after the warm-up: constant | cosine (decays to 0 at train.max_steps)
    schedule: str = "constant"
    grad_clip: float = 1.0
    # AdamW's fused kernel (one kernel for every parameter's update): auto = on when the weights are on CUDA
    fused: str = "auto"


@dataclass
class TrainConfig:
    max_steps: int = 1000
    # stop after this many minutes of training (0: no limit); equal-budget studies use it
    max_minutes: float = 0.0
    optim: OptimConfig = field(default_factory=OptimConfig)
    # the EMA decay ramps up as n / (n + 9) after n updates until it reaches ema_decay (diffusers EMAModel),
    # so a short run's EMA is not dominated by its first, untrained weights
    ema_decay: float = 0.999
    # per-sample loss weight: none | min_snr (Hang et al. 2023: min(SNR, gamma) in the target's units;
    # variance-preserving processes only)
    loss_weighting: str = "none"
    min_snr_gamma: float = 5.0
    # Lightning trainer settings
    accelerator: str = "auto"
    devices: Any = 1
    num_nodes: int = 1
    strategy: str = "auto"
    # 32-true | bf16-mixed | 16-mixed: the networks run under autocast; weights, optimizer state, EMA and the
    # loss stay fp32 (vfusion.training.switches)
    precision: str = "32-true"
    # torch.compile of the denoiser's forward for training (off by default; the first steps pay the compile)
    compile: bool = False
    # torch.compile mode (default | reduce-overhead | max-autotune) and backend (inductor; eager for debugging)
    compile_mode: str = "default"
    compile_backend: str = "inductor"
    # gradient checkpointing per network: [] (none), [all], or the model's networks by name
    # (videofusion: base, residual; video_unet and dit: denoiser; stage 1 keeps base)
    gradient_checkpointing: list[str] = field(default_factory=list)
    # convolution weights in channels-last memory order (channels_last / channels_last_3d)
    channels_last: bool = False
    log_every_n_steps: int = 10
    checkpoint_every_n_steps: int = 200
    # step checkpoints (checkpoints/step*.ckpt) kept: the last K by step; last.ckpt is always kept
    keep_checkpoints: int = 3
    # log a sample grid to TensorBoard every N steps (0: never)
    sample_every_n_steps: int = 0
    progress_bar: bool = True


@dataclass
class PretrainConfig:
    """Stage 1: image pretraining of the base generator on single frames."""

    max_steps: int = 1000
    max_minutes: float = 0.0
    lr: float = 2e-4
    batch_size: int = 64
    # frames taken from each loaded clip (at most data.num_frames; null: all of them): a clip's neighbouring frames are
    # nearly the same picture, so fewer frames per clip (and more clips per batch) make a more varied batch
    frames_per_clip: Optional[int] = None
    # where the diffusers-format base model is written (relative to the run dir)
    output_subdir: str = "base_unet"


@dataclass
class SampleConfig:
    # ddpm | ddim | dpm
    sampler: str = "ddim"
    steps: int = 50
    guidance_scale: float = 1.0
    num_videos: int = 8
    batch_size: int = 8
    # sample with the EMA weights
    use_ema: bool = True
    fps: int = 8
    seed: int = 0
    # FreeInit (Wu et al. 2024), any model: after a full sampling pass, diffuse the result back to the
    # first timestep, keep its low space-time frequencies, take the high ones from fresh prior noise and
    # sample again, free_init_iters times (0: off). Costs (free_init_iters + 1)x the sampling time.
    free_init_iters: int = 0
    # the Butterworth low-pass: its order and normalised cut-offs in space (d_s) and time (d_t), in (0, 1]
    free_init_order: int = 4
    free_init_ds: float = 0.25
    free_init_dt: float = 0.25


@dataclass
class EvalConfig:
    metrics: list[str] = field(default_factory=lambda: ["fvd", "kvd", "fid", "is"])
    num_videos: int = 64
    batch_size: int = 8
    # detector weights directory; None: $VFUSION_WEIGHTS_DIR or the user cache dir
    weights_dir: Optional[str] = None
    seed: int = 0
    # split of the real clips (None: data.eval_split); recorded in metrics.json
    real_split: Optional[str] = None
    # cache of real-data detector statistics (None: <data.cache_dir>/real_stats)
    real_stats_dir: Optional[str] = None
    # user-supplied C3D fine-tuned on UCF-101: enables is_ucf_c3d (TGAN IS protocol)
    c3d_weights: Optional[str] = None
    # which real clips (vfusion/evaluation/protocols.py): vfusion (a seeded subset of the evaluation split) |
    # stylegan_v (StyleGAN-V's first N videos in sorted order at random offsets; UCF-101 train + test, other
    # datasets train; metric names end with _sgv). Recorded in metrics.json.
    protocol: str = "vfusion"
    # `vfusion pipeline` also measures the metrics between two halves of the real clips (their floor)
    real_vs_real: bool = True
    # a transformers CLIP folder (CLIPModel + CLIPProcessor) for the clipsim metric (text-conditioned runs)
    clip_model: Optional[str] = None


@dataclass
class ExperimentConfig:
    name: str = MISSING
    # the run directory; None: runs/<name>
    run_dir: Optional[str] = None
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def _schema() -> DictConfig:
    return OmegaConf.structured(ExperimentConfig)


def _describe(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    msg = str(err).splitlines()[0]
    return f"config key '{key}': {msg}" if key else msg


def merge_config(*sources: Any, overrides: Optional[list[str]] = None) -> DictConfig:
    """Merge dicts/DictConfigs onto the schema, then ``key=value`` overrides (types checked, values not)."""
    cfg = _schema()
    try:
        for src in sources:
            cfg = OmegaConf.merge(cfg, src)
        if overrides:
            for item in overrides:
                if "=" not in item:
                    raise ConfigError(f"override '{item}' is not of the form key=value (e.g. train.max_steps=100)")
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
        OmegaConf.to_container(cfg, throw_on_missing=True)
    except OmegaConfBaseException as err:
        raise ConfigError(_describe(err) + " — check the spelling against vfusion/config.py") from err
    except yaml.YAMLError as err:  # an override value that is not valid YAML, e.g. k=@x
        raise ConfigError(f"an override is not valid YAML ({str(err).splitlines()[0]}); quote the value") from err
    return cfg


def load_config(path: str | Path, overrides: Optional[list[str]] = None) -> DictConfig:
    """Load one experiment YAML (plus overrides) onto the schema."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file '{path}' does not exist (experiments live under configs/, e.g. configs/embedded.yaml)")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:  # yaml syntax errors
        raise ConfigError(f"config file '{path}' is not valid YAML: {err}") from err
    try:
        return merge_config(raw, overrides=overrides)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from err


def check_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    """One line naming the key, the value and the choices (the registries pass their names here)."""
    if value not in choices:
        raise ConfigError(f"config key '{key}' is '{value}'; expected one of {', '.join(choices)}")


def at_least(cfg: DictConfig, keys: tuple[str, ...], low: float, strict: bool = False) -> None:
    for key in keys:
        v = OmegaConf.select(cfg, key)
        if v < low or (strict and v == low):
            raise ConfigError(f"config key '{key}' is {v}; expected a value {'>' if strict else '>='} {low}")


def run_dir_of(cfg: DictConfig) -> Path:
    return Path(cfg.run_dir) if cfg.run_dir else Path("runs") / cfg.name


def to_dict(cfg) -> dict:
    """A config (or any section of one) as plain containers; a mapping is copied as it is."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)
