"""Structured experiment configuration (OmegaConf dataclasses).

One YAML file under ``configs/`` fully specifies an experiment. It is merged onto
the :class:`ExperimentConfig` schema, so a misspelt key or a value of the wrong
type fails at load time with the key's full name. Command-line ``key=value``
overrides (dotted keys, e.g. ``train.max_steps=200``) are merged last. The
resolved config is written to every run directory and read back by ``sample``,
``evaluate`` and ``study``, so model keys are never repeated on the command line.
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
    # the old name of temporal: conv (kept so configs that set it, and saved run configs, still load)
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
    """Merge dicts/DictConfigs onto the schema, then ``key=value`` overrides."""
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
    validate(cfg)
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


# train.precision values: the trainer's, restricted to those that keep the weights, EMA and loss in fp32
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def _check_choice(value: str, choices: tuple[str, ...], key: str) -> None:
    if value not in choices:
        raise ConfigError(f"config key '{key}' is '{value}'; expected one of {', '.join(choices)}")


def validate(cfg: DictConfig) -> None:
    """Checks that go beyond types: choices and ranges."""
    from vfusion.data.registry import SPLITS, dataset_names
    from vfusion.diffusion.priors import LAMBDA_SCHEDULES, prior_names
    from vfusion.diffusion.samplers import PREDICTION_TYPES, PROCESS_KINDS, sampler_names
    from vfusion.models.registry import UNET_ARCHS, model_names

    _check_choice(cfg.data.dataset, dataset_names(), "data.dataset")
    _check_choice(cfg.data.split, SPLITS, "data.split")
    _check_choice(cfg.data.eval_split, SPLITS, "data.eval_split")
    _check_choice(cfg.data.short_policy, ("skip", "loop", "lower_stride"), "data.short_policy")
    _check_choice(cfg.data.cache, ("none", "clips", "latents"), "data.cache")
    _check_choice(cfg.data.missing_caption, ("error", "skip"), "data.missing_caption")
    if not 0.0 <= cfg.data.caption_dropout < 1.0:
        raise ConfigError(f"config key 'data.caption_dropout' is {cfg.data.caption_dropout}; expected a value in [0, 1)")
    _check_choice(cfg.noise.prior, prior_names(), "noise.prior")
    _check_choice(cfg.noise.schedule, LAMBDA_SCHEDULES, "noise.schedule")
    _check_choice(cfg.model.name, model_names(), "model.name")
    _check_choice(cfg.model.base.arch, UNET_ARCHS, "model.base.arch")
    _check_choice(cfg.model.residual.arch, UNET_ARCHS, "model.residual.arch")
    _check_choice(cfg.sample.sampler, sampler_names(), "sample.sampler")
    from vfusion.diffusion.priors import ALPHA_PRIORS, KEYFRAME_BASE_PRIORS

    if cfg.model.name == "videofusion" and cfg.noise.prior not in KEYFRAME_BASE_PRIORS:
        raise ConfigError(f"config key 'noise.prior' is '{cfg.noise.prior}', but VideoFusion needs a prior with a "
                          "shared keyframe base: use noise.prior=decomposed (noise.value=0 for independent noise off "
                          f"the keyframe), or a baseline (model.name=video_unet or dit) for '{cfg.noise.prior}'")
    timed = [k for k in ("value_T", "min_value_T", "per_frame_T") if cfg.noise.get(k) is not None]
    if timed and cfg.noise.prior != "decomposed":
        raise ConfigError(f"config key 'noise.{timed[0]}' is set, but only the decomposed prior has a λ that can depend "
                          f"on t, not '{cfg.noise.prior}'; remove it (noise.{timed[0]}=null)")
    if cfg.noise.alpha is not None and cfg.noise.prior not in ALPHA_PRIORS:
        raise ConfigError(f"config key 'noise.alpha' is set, but prior '{cfg.noise.prior}' does not use it (only "
                          f"{', '.join(ALPHA_PRIORS)} do); remove it (noise.alpha=null)")
    s = cfg.sample
    if s.free_init_iters < 0 or s.free_init_order < 1:
        raise ConfigError(f"config keys 'sample.free_init_iters' ({s.free_init_iters}) and 'sample.free_init_order' "
                          f"({s.free_init_order}) must be >= 0 and >= 1")
    for key in ("free_init_ds", "free_init_dt"):
        if not 0.0 < s[key] <= 1.0:
            raise ConfigError(f"config key 'sample.{key}' is {s[key]}; expected a normalised cut-off in (0, 1]")
    if cfg.diffusion.prediction_type is not None:
        _check_choice(cfg.diffusion.prediction_type, PREDICTION_TYPES, "diffusion.prediction_type")
    if cfg.diffusion.kind is not None:
        _check_choice(cfg.diffusion.kind, PROCESS_KINDS, "diffusion.kind")
    from vfusion.diffusion.samplers import samplers_for

    kind = cfg.diffusion.kind or "ddpm"  # unset: resolved later (a flow checkpoint makes it flow, checked again)
    if cfg.sample.sampler not in samplers_for(kind) and (cfg.diffusion.kind or cfg.sample.sampler != "euler"):
        raise ConfigError(f"config key 'sample.sampler' is '{cfg.sample.sampler}', which does not sample a {kind} "
                          f"process; use one of {', '.join(samplers_for(kind))}")
    _check_choice(cfg.model.base.class_map, ("fresh", "checkpoint"), "model.base.class_map")
    _check_choice(cfg.train.optim.schedule, ("constant", "cosine"), "train.optim.schedule")
    _check_choice(cfg.train.loss_weighting, ("none", "min_snr"), "train.loss_weighting")
    if cfg.train.loss_weighting == "min_snr" and cfg.diffusion.kind == "flow":
        raise ConfigError("config key 'train.loss_weighting' is 'min_snr', which is defined for diffusion.kind=ddpm; "
                          "use train.loss_weighting=none with rectified flow")
    if cfg.model.text.template.count("{}") != 1:
        raise ConfigError(f"config key 'model.text.template' is '{cfg.model.text.template}'; it needs exactly one {{}} "
                          "where the class name goes, e.g. 'a video of {}'")
    if cfg.data.fold not in (1, 2, 3):
        raise ConfigError(f"config key 'data.fold' is {cfg.data.fold}; UCF-101 has folds 1, 2 and 3")
    if cfg.data.num_frames < 1 or cfg.data.frame_stride < 1:
        raise ConfigError("config keys 'data.num_frames' and 'data.frame_stride' must be >= 1")
    if not 0.0 <= cfg.model.class_dropout < 1.0:
        raise ConfigError(f"config key 'model.class_dropout' is {cfg.model.class_dropout}; expected a value in [0, 1)")
    _check_choice(str(cfg.train.precision), PRECISIONS, "train.precision")
    _check_choice(str(cfg.train.optim.fused).lower(), ("auto", "true", "false"), "train.optim.fused")
    _check_choice(str(cfg.train.compile_mode), COMPILE_MODES, "train.compile_mode")
    if str(cfg.train.strategy).startswith("fsdp") and cfg.train.ema_decay > 0:
        raise ConfigError("config key 'train.strategy' is fsdp, which shards the weights across GPUs, but the EMA "
                          "(train.ema_decay) keeps a full copy of them on every GPU; set train.ema_decay=0 with fsdp")
    if cfg.train.keep_checkpoints < 1:
        raise ConfigError(f"config key 'train.keep_checkpoints' is {cfg.train.keep_checkpoints}; keep at least 1 step "
                          "checkpoint (last.ckpt is kept besides them)")
    _check_eval(cfg)
    if cfg.data.cache == "latents" and not cfg.data.vae_path:
        raise ConfigError("config key 'data.cache' is 'latents' but 'data.vae_path' is not set (a local diffusers AutoencoderKL directory)")
    _check_ranges(cfg)
    _check_shapes(cfg)
    from vfusion.diffusion.noise import noise_prior_from_config  # imports torch: only configs that are used get here

    try:
        noise_prior_from_config(cfg.noise, int(cfg.data.num_frames))  # the prior's own checks (λ schedules)
    except UserError as err:
        raise ConfigError(f"config section 'noise' (prior '{cfg.noise.prior}'): {err}") from err


def _check_eval(cfg: DictConfig) -> None:
    """The evaluation protocol, and a real split it would not read."""
    from vfusion.data.registry import SPLITS
    from vfusion.evaluation.protocols import PROTOCOLS, stylegan_v_split

    _check_choice(cfg.eval.protocol, PROTOCOLS, "eval.protocol")
    if cfg.eval.real_split is not None:
        _check_choice(cfg.eval.real_split, SPLITS, "eval.real_split")
        preset = stylegan_v_split(cfg.data.dataset)
        if cfg.eval.protocol == "stylegan_v" and cfg.eval.real_split != preset:
            raise ConfigError(f"config key 'eval.real_split' is '{cfg.eval.real_split}' but eval.protocol=stylegan_v "
                              f"reads the '{preset}' split of {cfg.data.dataset}; unset eval.real_split or use "
                              "eval.protocol=vfusion")


def _at_least(cfg: DictConfig, keys: tuple[str, ...], low: float, strict: bool = False) -> None:
    for key in keys:
        v = OmegaConf.select(cfg, key)
        if v < low or (strict and v == low):
            raise ConfigError(f"config key '{key}' is {v}; expected a value {'>' if strict else '>='} {low}")


def _check_ranges(cfg: DictConfig) -> None:
    """Counts, rates and budgets a run can use (checked before anything is written)."""
    _at_least(cfg, ("data.batch_size", "data.resolution", "pretrain.batch_size", "sample.steps", "sample.num_videos",
                    "sample.batch_size", "sample.fps", "eval.num_videos", "eval.batch_size",
                    "train.log_every_n_steps", "train.checkpoint_every_n_steps", "model.residual.frame_embed_dim"), 1)
    if cfg.diffusion.num_train_timesteps is not None:
        _at_least(cfg, ("diffusion.num_train_timesteps",), 1)
    _at_least(cfg, ("train.optim.lr", "pretrain.lr"), 0.0, strict=True)
    _at_least(cfg, ("model.text.cache_size",), 0)
    _at_least(cfg, ("train.max_minutes", "pretrain.max_minutes", "train.optim.weight_decay",
                    "train.optim.grad_clip", "train.optim.warmup_steps", "sample.guidance_scale",
                    "train.sample_every_n_steps", "train.ema_decay"), 0.0)
    per_clip = cfg.pretrain.frames_per_clip
    if per_clip is not None and per_clip < 1:
        raise ConfigError(f"config key 'pretrain.frames_per_clip' is {per_clip}; expected >= 1 (at most "
                          f"data.num_frames are taken), or null for whole clips")
    if cfg.train.ema_decay >= 1.0:
        raise ConfigError(f"config key 'train.ema_decay' is {cfg.train.ema_decay}; expected a value in [0, 1)")
    for stage in ("train", "pretrain"):
        steps, minutes = cfg[stage].max_steps, cfg[stage].max_minutes
        if steps == -1 and minutes > 0:  # a minutes-only budget
            continue
        if steps < 1:
            raise ConfigError(f"config key '{stage}.max_steps' is {steps}; expected >= 1 (or -1 together with "
                              f"{stage}.max_minutes > 0 for a time budget alone)")
    steps_t = cfg.diffusion.num_train_timesteps  # unset: checked once the process is resolved (check_sampling)
    if steps_t is not None and cfg.sample.steps > steps_t:
        raise ConfigError(f"config key 'sample.steps' is {cfg.sample.steps}; a sampler takes at most the "
                          f"{steps_t} training timesteps (diffusion.num_train_timesteps)")


def _check_shapes(cfg: DictConfig) -> None:
    """Frame counts and resolutions the chosen model can take."""
    name, frames = cfg.model.name, int(cfg.data.num_frames)
    if name == "videofusion" and frames < 2:
        raise ConfigError(f"config key 'data.num_frames' is {frames}; VideoFusion needs at least 2 frames (a keyframe "
                          "and the frames its residual generator denoises)")
    if not cfg.data.vae_path:  # latents: the runner checks the latent size once the VAE is loaded
        check_sample_size(cfg, int(cfg.data.resolution))
        # fresh UNets only: a pretrained base keeps its own blocks (and may bring a VAE: latent sizes);
        # building the networks checks the same at the size they really run at
        if not cfg.model.base.pretrained:
            res = int(cfg.data.resolution)
            base, residual = cfg.model.base, cfg.model.residual
            if base.attention:
                level_sizes(base.attention_resolutions, len(base.block_out_channels), res,
                            "model.base.attention_resolutions")
            if residual.attention:
                level_sizes(residual.attention_resolutions, len(residual.block_out_channels), res,
                            "model.residual.attention_resolutions")
            if residual.temporal != "none":
                level_sizes(residual.temporal_resolutions, len(residual.block_out_channels), res,
                            "model.residual.temporal_resolutions")


def level_sizes(wanted, levels: int, sample_size: int, key: str) -> Optional[set[int]]:
    """The feature-map sizes a list like ``attention_resolutions`` names, checked against the sizes
    of a UNet's ``levels`` at input ``sample_size`` (each level halves it); None when unset."""
    if wanted is None:
        return None
    sizes = [sample_size // 2 ** i for i in range(levels)]
    unknown = sorted({int(r) for r in wanted} - set(sizes))
    if unknown:
        raise ConfigError(f"config key '{key}' asks for {unknown}, which are not feature-map sizes of this UNet: "
                          f"at input size {sample_size} its levels are {sizes}")
    return {int(r) for r in wanted}


def check_sample_size(cfg: DictConfig, size: int) -> None:
    """The spatial size the networks see (pixels, or latents) fits their down-sampling / patches."""
    name, frames = cfg.model.name, int(cfg.data.num_frames)
    seen = f"the networks see {size}x{size} (data.resolution{', in VAE latents' if cfg.data.vae_path else ''})"
    unets = [("model.base", cfg.model.base)] + ([("model.residual", cfg.model.residual)] if name == "videofusion" else [])
    for key, ucfg in unets if name != "dit" else []:
        if ucfg.pretrained:
            continue
        levels = len(ucfg.block_out_channels)
        factor = 2 ** (levels - 1)
        if size % factor:
            raise ConfigError(f"{seen}, not divisible by {factor}, the down-sampling of {key} "
                              f"({levels} levels in {key}.block_out_channels); use a resolution divisible by "
                              f"{factor} or fewer levels")
        bad = [c for c in ucfg.block_out_channels if c % ucfg.norm_num_groups]
        if bad:
            raise ConfigError(f"{key}.block_out_channels {list(ucfg.block_out_channels)}: {bad} not divisible by "
                              f"{key}.norm_num_groups={ucfg.norm_num_groups}")
    if name == "dit":
        d = cfg.model.dit
        if d.patch_size < 1 or size % d.patch_size:
            raise ConfigError(f"{seen}, not divisible by model.dit.patch_size={d.patch_size}")
        if d.temporal_patch_size < 1 or frames % d.temporal_patch_size:
            raise ConfigError(f"data.num_frames {frames} is not divisible by model.dit.temporal_patch_size="
                              f"{d.temporal_patch_size}")


def run_dir_of(cfg: DictConfig) -> Path:
    return Path(cfg.run_dir) if cfg.run_dir else Path("runs") / cfg.name


def save_config(cfg: DictConfig, path: str | Path) -> None:
    from vfusion.utils.io import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))


def to_dict(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
