"""One run directory object, used by train, sample, evaluate, export and the study harness.

A run directory ``runs/<name>/`` holds ``config.yaml`` (the resolved experiment config, read back by sample and
evaluate), ``env.json`` (git SHA, Python, package versions, devices), ``run_info.json`` (data spec: channels, size,
frames, classes; model), ``model_info.json`` (parameter counts, measured time per training step), ``scheduler/``
(the run's noise process), ``checkpoints/`` (``last.ckpt`` and the last ``train.keep_checkpoints`` step
checkpoints, for resuming training only), ``train.lock`` (:mod:`vfusion.runlock`), ``tb/``, ``pipeline/`` (the
trained VideoFusionPipeline, EMA weights: what generates), ``base/`` (stage 2 from a stage-1 base: a copy of that
UNet), ``samples/``, ``generate/<task>/``, ``metrics.json``, ``real_vs_real.json`` (the floor of the metrics),
``pipeline_timings.json`` and ``status.json`` (the study harness's bookkeeping). Every name is spelled once, below:
other modules reach a run's files through :class:`RunDir` (or these constants, for a folder that is not a run, such
as ``vfusion sample --out DIR``). Torch-free: it only knows paths and small files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from vfusion.config import ConfigError

CONFIG_FILE = "config.yaml"
ENV_FILE = "env.json"
RUN_INFO_FILE = "run_info.json"
MODEL_INFO_FILE = "model_info.json"
SCHEDULER_DIR = "scheduler"
CHECKPOINTS_DIR = "checkpoints"
LAST_CHECKPOINT = "last.ckpt"
LOCK_FILE = "train.lock"
TB_DIR = "tb"
PIPELINE_DIR = "pipeline"
PIPELINE_INDEX = "model_index.json"   # in pipeline/: what makes it a loadable pipeline
BASE_DIR = "base"
SAMPLES_DIR = "samples"
GENERATE_DIR = "generate"
METRICS_FILE = "metrics.json"
STATUS_FILE = "status.json"
# beside metrics.json: the floor of the metrics (also in a study directory) and `vfusion pipeline`'s timings
REAL_VS_REAL_FILE = "real_vs_real.json"
PIPELINE_TIMINGS_FILE = "pipeline_timings.json"
# in a samples folder (RUN/samples, or any `vfusion sample --out`)
SAMPLES_MANIFEST = "samples.json"
SAMPLES_FRAMES = "videos.npy"
SAMPLES_GRID = "grid.gif"
SAMPLES_FILMSTRIP = "filmstrip.png"


def check_sampling(batch_size: int, steps: int, guidance_scale: float, num_train_timesteps: Optional[int] = None,
                   num_videos: Optional[int] = None) -> None:
    """One clear error for counts and scales no sampler can use (before anything is written)."""
    from vfusion.errors import UserError

    if num_videos is not None and num_videos < 1:
        raise UserError(f"{num_videos} videos: ask for at least one (--num-videos N)")
    if batch_size < 1:
        raise UserError(f"batch size {batch_size}: generate at least one video per batch (--batch-size N, sample.batch_size)")
    if steps < 1 or (num_train_timesteps is not None and steps > num_train_timesteps):
        raise UserError(f"{steps} sampling steps: choose between 1 and the {num_train_timesteps or 'number of'} "
                        "training timesteps (--steps N, sample.steps)")
    if guidance_scale < 0:
        raise UserError(f"guidance scale {guidance_scale} is negative; use 1 for no guidance, > 1 to strengthen it "
                        "(--guidance, sample.guidance_scale)")


@dataclass(frozen=True)
class SampleSettings:
    """How videos are generated from a run: resolved once from the run's config and the caller's choices."""

    num_videos: int
    sampler: str
    steps: int
    guidance_scale: float
    seed: int
    batch_size: int
    fps: int
    prompt: Optional[str] = None   # free text for a text-conditioned base (None: each class's prompt)
    prompts: Optional[tuple[str, ...]] = None   # or one per video, cycling: video i gets prompts[i mod P]
    negative_prompt: Optional[str] = None       # what guidance steers away from (None: the empty prompt)

    def check(self, num_train_timesteps: Optional[int] = None) -> "SampleSettings":
        from vfusion.errors import UserError

        check_sampling(self.batch_size, self.steps, self.guidance_scale, num_train_timesteps, self.num_videos)
        if self.prompt is not None and self.prompts is not None:
            raise UserError("give one prompt for every video (--prompt) or a file of prompts (--prompts), not both")
        if self.prompts is not None and not self.prompts:
            raise UserError("the prompts file holds no prompt; write one prompt per line")
        return self

    def video_prompts(self, start: int, count: int) -> Optional[list[str]]:
        """The given prompts of videos ``start .. start + count - 1`` (None: the run's own prompts)."""
        if self.prompts:
            return [self.prompts[(start + j) % len(self.prompts)] for j in range(count)]
        return [self.prompt] * count if self.prompt is not None else None

    def describe(self) -> dict:
        out = {"num_videos": self.num_videos, "sampler": self.sampler, "steps": self.steps,
               "guidance_scale": self.guidance_scale, "seed": self.seed, "batch_size": self.batch_size}
        if self.prompt is not None:
            out["prompt"] = self.prompt
        if self.prompts is not None:
            out["prompts"] = list(self.prompts)
        if self.negative_prompt is not None:
            out["negative_prompt"] = self.negative_prompt
        return out


def resolve_sample_settings(defaults: dict, **choices) -> SampleSettings:
    """The caller's ``choices`` where not None, else ``defaults`` (keys of :class:`SampleSettings`)."""
    merged = {k: (choices[k] if choices.get(k) is not None else defaults.get(k))
              for k in SampleSettings.__dataclass_fields__}
    return SampleSettings(num_videos=int(merged["num_videos"]), sampler=str(merged["sampler"]),
                          steps=int(merged["steps"]), guidance_scale=float(merged["guidance_scale"]),
                          seed=int(merged["seed"]), batch_size=int(merged["batch_size"]), fps=int(merged["fps"]),
                          prompt=merged.get("prompt"),
                          prompts=tuple(merged["prompts"]) if merged.get("prompts") is not None else None,
                          negative_prompt=merged.get("negative_prompt"))


def _inside(*parts: str) -> property:
    """A property: the path of ``parts`` inside the run directory."""
    return property(lambda self: self.path.joinpath(*parts))


def settings_from_config(cfg, for_eval: bool = False, **choices) -> SampleSettings:
    """Sampling settings: the caller's ``choices`` where not None, else the config's ``sample.*``
    (``eval.*`` for the count, seed and batch size when ``for_eval``)."""
    sc, ev = cfg.sample, cfg.eval
    counts = ev if for_eval else sc
    defaults = {"num_videos": counts.num_videos, "seed": counts.seed, "batch_size": counts.batch_size,
                "sampler": sc.sampler, "steps": sc.steps, "guidance_scale": sc.guidance_scale, "fps": sc.fps}
    return resolve_sample_settings(defaults, **choices)


def sample_defaults(recorded: Optional[dict] = None) -> dict:
    """Sampling settings: ``recorded`` (a pipeline's ``video_config["sample"]``) over the schema's
    (:class:`vfusion.config.SampleConfig`)."""
    from dataclasses import asdict

    from vfusion.config import SampleConfig

    return {**asdict(SampleConfig()), **(recorded or {})}


class RunDir:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, other) -> Path:
        return self.path / other

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # ---- paths -----------------------------------------------------------------------------
    config_path = _inside(CONFIG_FILE)
    env_path = _inside(ENV_FILE)
    run_info_path = _inside(RUN_INFO_FILE)
    model_info_path = _inside(MODEL_INFO_FILE)
    status_path = _inside(STATUS_FILE)
    checkpoints = _inside(CHECKPOINTS_DIR)
    last_checkpoint_path = _inside(CHECKPOINTS_DIR, LAST_CHECKPOINT)  # where training saves it
    pipeline_dir = _inside(PIPELINE_DIR)
    pipeline_index = _inside(PIPELINE_DIR, PIPELINE_INDEX)
    scheduler_dir = _inside(SCHEDULER_DIR)
    base_dir = _inside(BASE_DIR)
    samples_dir = _inside(SAMPLES_DIR)
    samples_grid = _inside(SAMPLES_DIR, SAMPLES_GRID)
    samples_filmstrip = _inside(SAMPLES_DIR, SAMPLES_FILMSTRIP)
    generate_dir = _inside(GENERATE_DIR)
    metrics_path = _inside(METRICS_FILE)
    real_vs_real_path = _inside(REAL_VS_REAL_FILE)
    tb_dir = _inside(TB_DIR)
    lock_path = _inside(LOCK_FILE)

    def lock(self, command: Optional[str] = None):
        """``with run.lock():`` this process is the one training here (see :mod:`vfusion.runlock`)."""
        from vfusion.runlock import RunLock

        return RunLock(self.lock_path, command)

    @property
    def last_checkpoint(self) -> Optional[Path]:
        p = self.last_checkpoint_path
        return p if p.is_file() else None

    def has_pipeline(self) -> bool:
        return self.pipeline_index.is_file()

    # ---- files -------------------------------------------------------------------------------
    def config(self, overrides: Optional[list[str]] = None):
        """The run's resolved config (merged onto the schema), its paths read against this directory
        (:func:`resolve_paths`), then ``overrides``."""
        from vfusion.config import load_config, merge_config

        if not self.config_path.is_file():
            raise ConfigError(f"'{self.path}' is not a vfusion run directory (no config.yaml)")
        cfg = resolve_paths(load_config(self.config_path), self.path)
        return merge_config(cfg, overrides=overrides) if overrides else cfg

    def read_json(self, name: str) -> Optional[dict]:
        return read_json_file(self.path / name)

    def write_json(self, name: str, obj) -> Path:
        from vfusion.utils.io import atomic_write_json

        atomic_write_json(self.path / name, obj)
        return self.path / name

    def run_info(self) -> dict:
        info = self.read_run_info()
        if info is None:
            raise ConfigError(f"'{self.path}' has no {RUN_INFO_FILE} (run `vfusion train` first)")
        return info

    def read_run_info(self) -> Optional[dict]:
        return self.read_json(RUN_INFO_FILE)

    def read_model_info(self) -> Optional[dict]:
        return self.read_json(MODEL_INFO_FILE)

    def read_status(self) -> Optional[dict]:
        return self.read_json(STATUS_FILE)

    def write_status(self, status: dict) -> Path:
        return self.write_json(STATUS_FILE, status)

    def read_metrics(self) -> Optional[dict]:
        return self.read_json(METRICS_FILE)

    def write_metrics(self, result: dict) -> Path:
        """``metrics.json``: the evaluation's result (:func:`write_result`), the one way that file is written."""
        return write_result(self.metrics_path, result)

    def read_real_vs_real(self) -> Optional[dict]:
        return self.read_json(REAL_VS_REAL_FILE)

    def video_config(self) -> dict:
        """The trained pipeline's ``video_config`` (in its model_index.json); the error of :meth:`pipeline_path`
        when there is none."""
        return json.loads((self.pipeline_path() / PIPELINE_INDEX).read_text()).get("video_config", {})

    def pipeline_path(self) -> Path:
        """The folder of the trained pipeline, or a clear error saying how to make it."""
        if self.has_pipeline():
            return self.pipeline_dir
        if self.last_checkpoint is not None:
            raise ConfigError(f"'{self.path}' has a checkpoint but no pipeline/ (training did not finish); write one "
                              f"from the last checkpoint with `vfusion export --run {self.path}`")
        raise ConfigError(f"'{self.path}' has no trained model (no pipeline/ and no checkpoints/last.ckpt); "
                          "run `vfusion train` first")

    def pipeline_is_stale(self) -> bool:
        """True when checkpoints/last.ckpt is newer than the exported pipeline."""
        ckpt = self.last_checkpoint
        index = self.pipeline_index
        return ckpt is not None and index.is_file() and ckpt.stat().st_mtime > index.stat().st_mtime + 1.0


def read_json_file(path: str | Path) -> Optional[dict]:
    """The JSON record at ``path``; None when it is missing or unreadable."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError:  # written atomically, so only a hand edit gets here
        return None


def write_result(path: str | Path, result: dict) -> Path:
    """An evaluation result (metrics.json, real_vs_real.json, ``--out``) written atomically, its absolute paths
    made portable so that a committed result names no one's disk."""
    from vfusion.utils.io import atomic_write_json, portable_paths

    atomic_write_json(path, portable_paths(result))
    return Path(path)


# the config keys that hold paths: a run records them relative to itself when they lie inside it
# (vfusion.runpaths), and reads them back against wherever the run directory is now
PATH_KEYS = ("data.root", "data.splits_dir", "data.captions_file", "data.cache_dir", "data.vae_path", "model.base.pretrained",
             "eval.weights_dir", "eval.real_stats_dir", "eval.c3d_weights", "eval.clip_model")


def resolve_paths(cfg: DictConfig, run_dir) -> DictConfig:
    """``cfg`` (read from ``run_dir/config.yaml``) with each relative path that exists inside ``run_dir``
    made a path to it; other relative paths stay as they are (runs that recorded them relative to the
    folder they were started from)."""
    run_dir = Path(run_dir)
    for key in PATH_KEYS:
        value = OmegaConf.select(cfg, key)
        if value and not Path(value).expanduser().is_absolute() and (run_dir / value).exists():
            OmegaConf.update(cfg, key, str(run_dir / value))
    return cfg


def save_config(cfg: DictConfig, path: str | Path) -> None:
    """A resolved config as YAML, written atomically."""
    from vfusion.utils.io import atomic_write_text

    atomic_write_text(path, OmegaConf.to_yaml(cfg, resolve=True))
