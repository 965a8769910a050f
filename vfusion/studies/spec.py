"""Study files: a grid of runs over one base experiment, and its expansion into runs.

A study YAML (``configs/studies/*.yaml``; its keys: :class:`StudySpec`) names a base experiment, overrides for every
run, an equal budget per run, seeds and a grid of axes whose variants add overrides: the runs are the product over
the axes x the seeds. Run ``<labels joined by _>_s<seed>`` lives in ``<study_dir>/runs/<run_id>``. The value
``@stage1`` (e.g. ``model.base.pretrained=@stage1``) is replaced by the base UNet that stage 1 of the study writes
(once per seed, or once for the study with ``stage1.per_seed: false``); stage 1 runs only when some run asks for
it (a variant can opt out of a study-level ``@stage1`` with ``model.base.pretrained=null``). A FLOPs budget
(``budget: {flops: N}``) is equal compute that a loaded machine cannot change: every run trains for
``max(1, floor(N / per_step))`` steps, so for at most N FLOPs and at least N − per_step; ``budget.minutes`` may be
added as a safety cap (a run it stops says so), ``budget.steps`` may not (both would set the step count). The
counting: :func:`plan_study`.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from vfusion.config import ConfigError
from vfusion.experiment import load_experiment_config

STAGE1 = "@stage1"
LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+\-]*$")
AXIS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
# columns of results.csv besides the axes (plus loss_* and metric:*): no axis may take these names
RESERVED_COLUMNS = ("run_id", "seed", "state", "model_name", "noise_schedule", "lambda_mean", "frame_corr", "steps", "train_s",
                    "train_sessions", "mean_step_s", "params", "params_trainable", "sample_s", "eval_s",
                    "flops_per_step", "flops_total")
# stage 1 must train the same base UNet the runs load: these keys have to agree
STAGE1_MATCH_KEYS = ("model.base.arch", "model.base.block_out_channels", "model.base.layers_per_block",
                     "model.base.attention", "model.base.norm_num_groups", "data.resolution", "data.vae_path",
                     "data.class_conditional", "data.dataset")


class StudyError(ConfigError):
    """A study file that cannot be run as written."""


# --------------------------------------------------------------------------- schema

@dataclass
class Variant:
    label: str = MISSING
    overrides: list[str] = field(default_factory=list)


@dataclass
class Budget:
    """Equal training budget of every run (whichever limit comes first)."""

    steps: Optional[int] = None
    minutes: Optional[float] = None
    # training FLOPs per run (forward + backward, all devices): sets each run's train.max_steps
    flops: Optional[float] = None


@dataclass
class Stage1:
    """Image pretraining of the base UNet, shared by the runs that use ``@stage1``."""

    steps: Optional[int] = None
    minutes: Optional[float] = None
    # one stage 1 per seed (its seed = the run's seed), or one for the whole study (first seed)
    per_seed: bool = True
    overrides: list[str] = field(default_factory=list)


@dataclass
class StudyEval:
    # [] : no detector metrics (the table then reports training losses only)
    metrics: list[str] = field(default_factory=list)
    num_videos: Optional[int] = None
    # compute the real-vs-real floor once for the study (the metrics of limits.FLOOR_METRICS)
    real_vs_real: bool = False


@dataclass
class StudyResults:
    # loss columns: mean of the last N logged values of each loss
    loss_window: int = 20
    # max runs shown in the sample-grid figure
    max_sample_panels: int = 24


@dataclass
class StudySpec:
    """A study YAML (``configs/studies/*.yaml``) as written::

        name: lambda_sweep_embedded          # study dir: runs/studies/<name> unless study_dir is set
        description: λ sweep on the embedded dataset
        base: configs/embedded.yaml          # the experiment every run starts from
        overrides: [model.base.pretrained=@stage1]   # key=value for every run
        budget: {steps: 1500}                # equal per run -> train.max_steps / train.max_minutes
                                             # (minutes alone: no step limit; both: the first reached)
                                             # or {flops: 2.0e15}: training FLOPs per run
        seeds: [0, 1]
        grid:                                # axis -> variants; runs = product over axes x seeds
          lam:
            - {label: l0, overrides: [noise.value=0]}
            - {label: l0.5, overrides: [noise.value=0.5]}
        stage1: {steps: 1000, minutes: 0, per_seed: true, overrides: []}
        eval: {metrics: [fvd, kvd], num_videos: 64, real_vs_real: false}
        results: {loss_window: 20}
    """

    name: str = MISSING
    description: str = ""
    base: str = MISSING
    study_dir: Optional[str] = None
    overrides: list[str] = field(default_factory=list)
    budget: Budget = field(default_factory=Budget)
    seeds: list[int] = field(default_factory=lambda: [0])
    stage1: Stage1 = field(default_factory=Stage1)
    eval: StudyEval = field(default_factory=StudyEval)
    results: StudyResults = field(default_factory=StudyResults)
    # validated separately (variant by variant) for error messages that name the variant
    grid: Any = MISSING


@dataclass
class Study:
    """A validated study: its settings, ordered axes and where it lives."""

    spec: DictConfig
    axes: dict[str, list[Variant]]
    path: Path
    base_path: Path
    study_dir: Path
    cli_overrides: list[str] = field(default_factory=list)
    # resolved configs (loading one costs ~0.1 s): stage 1 per seed, the plan
    cache: dict = field(default_factory=dict, repr=False)
    # True for the one-cell study of ``vfusion pipeline``: the run lives in study_dir itself and
    # stage 1 beside it in ``<study_dir>_base`` (``runs/<name>`` and ``runs/<name>_base``)
    single: bool = False

    @property
    def name(self) -> str:
        return str(self.spec.name)


@dataclass
class RunPlan:
    """One run of the grid; ``overrides`` fully define its config on top of the base YAML."""

    run_id: str
    seed: int
    labels: dict[str, str]
    overrides: list[str]
    run_dir: Path
    stage1_dir: Optional[Path]  # set when the run uses @stage1
    variant_overrides: list[str] = field(default_factory=list)  # the grid's part of ``overrides``
    # a FLOPs budget: {"budget", "per_step", "steps", "total"} (set by plan_study)
    flops: Optional[dict] = None


# --------------------------------------------------------------------------- loading

def _fail(path: Path, key: str, msg: str) -> StudyError:
    return StudyError(f"study file '{path}': key '{key}': {msg}")


def _check_overrides(path: Path, key: str, items) -> list[str]:
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, str) or "=" not in item or item.startswith("="):
            raise _fail(path, f"{key}[{i}]", f"'{item}' is not of the form key=value (e.g. noise.value=0.5)")
        out.append(item)
    return out


def _parse_grid(path: Path, grid) -> dict[str, list[Variant]]:
    if not isinstance(grid, DictConfig) or len(grid) == 0:
        raise _fail(path, "grid", "expected a mapping axis-name -> list of variants {label, overrides}")
    axes: dict[str, list[Variant]] = {}
    for axis, variants in grid.items():
        axis = str(axis)
        if not AXIS_RE.match(axis):
            raise _fail(path, f"grid.{axis}", "axis names start with a letter and use letters, digits and _")
        if axis in RESERVED_COLUMNS or axis.startswith("loss"):
            raise _fail(path, f"grid.{axis}", f"'{axis}' is a column of results.csv already; rename the axis")
        if not isinstance(variants, ListConfig) or len(variants) == 0:
            raise _fail(path, f"grid.{axis}", "expected a non-empty list of variants {label: ..., overrides: [...]}")
        parsed, seen = [], set()
        for i, v in enumerate(variants):
            key = f"grid.{axis}[{i}]"
            if not isinstance(v, DictConfig):
                raise _fail(path, key, f"expected a mapping {{label: ..., overrides: [...]}}, got '{v}'")
            unknown = sorted(set(v.keys()) - {"label", "overrides"})
            if unknown:
                raise _fail(path, f"{key}.{unknown[0]}", "unknown key; a variant has only 'label' and 'overrides'")
            label = v.get("label")
            if label is None or not LABEL_RE.match(str(label)):
                raise _fail(path, f"{key}.label", f"'{label}' is not a valid label (letters, digits, '.', '+', '-'; "
                            "it becomes part of the run directory name)")
            label = str(label)
            if label in seen:
                raise _fail(path, f"{key}.label", f"label '{label}' is used twice on axis '{axis}'")
            seen.add(label)
            ovs = v.get("overrides") or []
            if not isinstance(ovs, ListConfig) and ovs != []:
                raise _fail(path, f"{key}.overrides", "expected a list of key=value strings")
            parsed.append(Variant(label=label, overrides=_check_overrides(path, f"{key}.overrides", list(ovs))))
        axes[axis] = parsed
    return axes


def _find_base(base: str, study_path: Path) -> Path:
    """``base`` as given (relative to the working directory), else relative to the study
    file's folder or one of its parents (so ``configs/embedded.yaml`` works from anywhere
    in the repository)."""
    p = Path(base)
    if p.is_absolute() or p.is_file():
        return p
    for parent in [study_path.parent, *study_path.resolve().parents]:
        if (parent / p).is_file():
            return parent / p
    return p


def load_study(path: str | Path, cli_overrides: Optional[list[str]] = None, study_dir: Optional[str] = None) -> Study:
    """Read and validate a study file (every error names the offending key)."""
    path = Path(path)
    if not path.is_file():
        raise StudyError(f"study file '{path}' does not exist (shipped studies live under configs/studies/)")
    try:
        raw = OmegaConf.load(path)
    except Exception as err:
        raise StudyError(f"study file '{path}' is not valid YAML: {err}") from err
    if not isinstance(raw, DictConfig):
        raise StudyError(f"study file '{path}': expected a mapping at the top level")
    grid = raw.get("grid") if "grid" in raw else None
    rest = OmegaConf.create({k: v for k, v in raw.items() if k != "grid"})
    try:
        spec = OmegaConf.merge(OmegaConf.structured(StudySpec), rest)
        spec.grid = {}
        OmegaConf.to_container(spec, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        raise _fail(path, key, str(err).splitlines()[0]) from err
    if grid is None:
        raise _fail(path, "grid", "missing; a study needs at least one axis with variants")
    axes = _parse_grid(path, grid)
    _check_overrides(path, "overrides", spec.overrides)
    _check_overrides(path, "stage1.overrides", spec.stage1.overrides)
    if not spec.seeds:
        raise _fail(path, "seeds", "empty; give at least one seed")
    if len(set(spec.seeds)) != len(spec.seeds):
        raise _fail(path, "seeds", f"repeated seeds in {list(spec.seeds)}")
    b = spec.budget
    if b.steps is None and not b.minutes and b.flops is None:
        raise _fail(path, "budget", "set budget.steps, budget.minutes and/or budget.flops (the equal training budget "
                    "of each run)")
    if b.flops is not None and b.steps is not None:
        raise _fail(path, "budget.flops", "budget.flops sets each run's step count, and so does budget.steps; keep one "
                    "(budget.minutes may stay as a cap)")
    if b.flops is not None and not b.flops >= 1:
        raise _fail(path, "budget.flops", f"{b.flops}; expected the training FLOPs of each run (>= 1, e.g. 2.0e15)")
    if b.steps is not None and b.steps < 1:
        raise _fail(path, "budget.steps", f"{b.steps}; expected >= 1")
    if b.minutes is not None and b.minutes < 0:
        raise _fail(path, "budget.minutes", f"{b.minutes}; expected >= 0")
    if spec.results.loss_window < 1:
        raise _fail(path, "results.loss_window", "expected >= 1")
    if spec.eval.num_videos is not None and spec.eval.num_videos < 1:
        raise _fail(path, "eval.num_videos", "expected >= 1")
    if not LABEL_RE.match(str(spec.name).replace("_", "-")):
        raise _fail(path, "name", f"'{spec.name}' is used as a folder name: letters, digits, '_', '.', '-'")
    base_path = _find_base(spec.base, path)
    if not base_path.is_file():
        raise _fail(path, "base", f"experiment file '{spec.base}' not found (relative to the working directory "
                    "or to the study file's folders)")
    cli = _check_overrides(path, "command-line overrides", list(cli_overrides or []))
    budget_keys = {"train.max_steps", "train.max_minutes"}
    for where, items in [("overrides", spec.overrides), ("command-line overrides", cli)] + \
            [(f"grid.{a}[{i}].overrides", v.overrides) for a, vs in axes.items() for i, v in enumerate(vs)]:
        for item in items:
            if _key(item) in budget_keys:
                raise _fail(path, where, f"'{item}': the training budget is set by 'budget' "
                            "(equal for every run), not by overrides")
            k = _key(item)
            if _value(item).startswith("@") and _value(item) != STAGE1:
                raise _fail(path, where, f"'{item}': unknown placeholder; the only one is {STAGE1}")
            if k in ("seed", "name", "run_dir"):
                raise _fail(path, where, f"'{item}': '{k}' is set by the study harness (use 'seeds' / 'study_dir')")
    sdir = Path(study_dir or spec.study_dir or Path("runs") / "studies" / str(spec.name))
    return Study(spec=spec, axes=axes, path=path, base_path=base_path, study_dir=sdir, cli_overrides=cli)


def single_run_study(config_path: str | Path, overrides: Optional[list[str]] = None,
                     evaluate: bool = True) -> Study:
    """The one-cell study of ``vfusion pipeline``: one experiment config trained, sampled and evaluated by
    the harness, with its own budgets (``train.*``, ``pretrain.*``), in ``runs/<name>`` (stage 1, unless the
    config names a pretrained base, in ``runs/<name>_base``)."""
    from vfusion.config import run_dir_of

    overrides = list(overrides or [])
    cfg = load_experiment_config(config_path, overrides)
    budget_keys = ("train.max_steps", "train.max_minutes", "seed", "name", "run_dir")
    spec = OmegaConf.merge(OmegaConf.structured(StudySpec), {
        "name": cfg.name, "base": str(config_path), "description": f"vfusion pipeline --config {config_path}",
        "overrides": [] if cfg.model.base.pretrained else [f"model.base.pretrained={STAGE1}"],
        "budget": {"steps": int(cfg.train.max_steps), "minutes": float(cfg.train.max_minutes)},
        "seeds": [int(cfg.seed)],
        "eval": {"metrics": list(cfg.eval.metrics) if evaluate else [], "num_videos": int(cfg.eval.num_videos),
                 "real_vs_real": evaluate and bool(cfg.eval.real_vs_real)},
        "grid": {}})
    return Study(spec=spec, axes={}, path=Path(config_path), base_path=Path(config_path), study_dir=run_dir_of(cfg),
                 cli_overrides=[o for o in overrides if _key(o) not in budget_keys], single=True)


# --------------------------------------------------------------------------- expansion

def stage1_dir(study: Study, seed: int) -> Path:
    if study.single:
        return study.study_dir.with_name(study.study_dir.name + "_base")
    return study.study_dir / (f"stage1_s{seed}" if study.spec.stage1.per_seed else "stage1")


def stage1_seed(study: Study, seed: int) -> int:
    return int(seed) if study.spec.stage1.per_seed else int(study.spec.seeds[0])


def _budget_overrides(study: Study) -> list[str]:
    b = study.spec.budget
    out = []
    if b.flops is None:  # a FLOPs budget's train.max_steps comes from the run's count (plan_study)
        # a minutes-only budget: no step limit (Lightning's max_steps=-1)
        out.append(f"train.max_steps={int(b.steps) if b.steps is not None else -1}")
    out.append(f"train.max_minutes={float(b.minutes or 0.0)}")
    return out


def _eval_overrides(study: Study) -> list[str]:
    e = study.spec.eval
    out = [f"eval.metrics=[{','.join(e.metrics)}]"]
    if e.num_videos is not None:
        out.append(f"eval.num_videos={int(e.num_videos)}")
    return out


def expand(study: Study) -> list[RunPlan]:
    """The runs of the study: the cartesian product of the axes (file order) for each seed.

    Seed-major order: an interrupted study has a complete comparison at the first seed first.
    """
    plans = []
    for seed in study.spec.seeds:
        seed = int(seed)
        for combo in itertools.product(*study.axes.values()):
            labels = {axis: v.label for axis, v in zip(study.axes, combo)}
            run_id = study.name if study.single else "_".join(labels.values()) + f"_s{seed}"
            run_dir = study.study_dir if study.single else study.study_dir / "runs" / run_id
            variant = [o for v in combo for o in v.overrides]
            ovs = list(study.spec.overrides) + study.cli_overrides + variant \
                + _eval_overrides(study) + _budget_overrides(study)
            s1 = None
            last = {_key(o): _value(o) for o in ovs}  # a later override wins
            if STAGE1 in last.values():
                s1 = stage1_dir(study, seed)
                unet_dir = s1 / str(stage1_config(study, seed).pretrain.output_subdir)
                ovs = [f"{_key(o)}={unet_dir}" if _value(o) == STAGE1 else o for o in ovs]
            else:  # every @stage1 was overridden later (e.g. model.base.pretrained=null)
                ovs = [o for o in ovs if _value(o) != STAGE1]
            name = study.name if study.single else f"{study.name}_{run_id}"
            ovs += [f"seed={seed}", f"name={name}", f"run_dir={run_dir}"]
            plans.append(RunPlan(run_id=run_id, seed=seed, labels=labels, overrides=ovs, run_dir=run_dir,
                                 stage1_dir=s1, variant_overrides=variant))
    return plans


def _key(override: str) -> str:
    return override.split("=", 1)[0].strip()


def _value(override: str) -> str:
    return override.split("=", 1)[1].strip()


def run_config(study: Study, plan: RunPlan) -> DictConfig:
    """The resolved experiment config of one run (validated against the schema).

    Applied in order: the base YAML, the study ``overrides``, extra command-line overrides, each axis' variant
    overrides (axis order), the eval settings, the budget, then ``seed``, ``name`` and ``run_dir``.
    """
    try:
        return load_experiment_config(study.base_path, plan.overrides)
    except ConfigError as err:
        raise StudyError(f"study '{study.name}', run '{plan.run_id}': {err}") from err


def stage1_config(study: Study, seed: int) -> DictConfig:
    """Stage-1 config: the base YAML with the study-level and command-line overrides (minus ``@stage1`` ones),
    ``stage1.overrides`` and its budget (``pretrain.max_steps`` / ``pretrain.max_minutes``;
    when ``stage1`` sets neither, the base experiment's ``pretrain`` values apply)."""
    key = ("stage1", stage1_seed(study, seed))
    if key not in study.cache:
        study.cache[key] = _stage1_config(study, seed)
    return study.cache[key]


def _stage1_config(study: Study, seed: int) -> DictConfig:
    s = study.spec.stage1
    ovs = [o for o in list(study.spec.overrides) + study.cli_overrides if _value(o) != STAGE1]
    ovs += list(s.overrides)
    if s.steps is not None or s.minutes:  # as for runs: minutes alone lift the step limit
        ovs.append(f"pretrain.max_steps={int(s.steps) if s.steps is not None else -1}")
        ovs.append(f"pretrain.max_minutes={float(s.minutes or 0.0)}")
    sd = stage1_seed(study, seed)
    d = stage1_dir(study, seed)
    ovs += [f"seed={sd}", f"name={d.name if study.single else f'{study.name}_{d.name}'}", f"run_dir={d}"]
    try:
        return load_experiment_config(study.base_path, ovs)
    except ConfigError as err:
        raise StudyError(f"study '{study.name}', stage 1: {err}") from err


def check_stage1_compatible(study: Study, plan: RunPlan, cfg: DictConfig) -> None:
    """A run loading the stage-1 UNet must describe the same UNet and data as stage 1 trains."""
    s1 = stage1_config(study, plan.seed)
    for key in STAGE1_MATCH_KEYS:
        a, b = OmegaConf.select(cfg, key), OmegaConf.select(s1, key)
        a = OmegaConf.to_container(a) if isinstance(a, (DictConfig, ListConfig)) else a
        b = OmegaConf.to_container(b) if isinstance(b, (DictConfig, ListConfig)) else b
        if a != b:
            raise StudyError(f"study '{study.name}', run '{plan.run_id}': uses @stage1 but its '{key}' is {a} "
                             f"while stage 1 trains with {b}; set it at study level (overrides) or in "
                             "stage1.overrides so both agree")


def plan_study(study: Study, spec_info: Optional[dict] = None) -> list[tuple[RunPlan, DictConfig]]:
    """Every run with its resolved config (computed once per Study; do not mutate them);
    fails early on any bad override. A FLOPs budget counts each cell's step FLOPs here
    (``spec_info``: the data facts, else read from the dataset).

    The count is :func:`vfusion.training.flops.run_step_flops` (forward + backward of the diffusion loss on one
    batch of the run's batch size, every device), made once per grid cell (seeds share it); a run that uses
    ``@stage1`` is counted on the architecture stage 1 trains (its starting base), so no training has to happen
    first. The per-step FLOPs, the steps and the total are recorded in each run's ``status.json`` and the
    results table."""
    if "plan" in study.cache:
        return study.cache["plan"]
    out = []
    for plan in expand(study):
        cfg = run_config(study, plan)
        if plan.stage1_dir is not None:
            check_stage1_compatible(study, plan, cfg)
        if study.spec.budget.flops is not None:
            cfg = _apply_flops_budget(study, plan, cfg, spec_info)
        out.append((plan, cfg))
    study.cache["plan"] = out
    return out


def flops_budget_steps(budget: float, per_step: int) -> int:
    """Optimizer steps of a FLOPs budget: as many whole steps as fit, at least one."""
    return max(1, int(budget) // int(per_step))


def _apply_flops_budget(study: Study, plan: RunPlan, cfg: DictConfig, spec_info: Optional[dict]) -> DictConfig:
    """``train.max_steps = max(1, floor(budget / per-step FLOPs))`` for one run (its plan records the count)."""
    from vfusion.errors import UserError
    from vfusion.training.flops import run_step_flops

    counted = cfg.copy()
    if plan.stage1_dir is not None:  # stage 1's output has the architecture of what stage 1 starts from
        counted.model.base.pretrained = stage1_config(study, plan.seed).model.base.pretrained
    counted.seed, counted.name, counted.run_dir = 0, "flops_count", None  # the seeds of a cell cost the same
    key = ("flops", OmegaConf.to_yaml(counted, resolve=True))
    if key not in study.cache:
        try:
            study.cache[key] = run_step_flops(counted, spec_info)
        except UserError as err:
            raise StudyError(f"study '{study.name}', run '{plan.run_id}': counting the FLOPs of a training step "
                             f"for budget.flops: {err}") from err
    per_step = int(study.cache[key])
    budget = int(study.spec.budget.flops)
    steps = flops_budget_steps(budget, per_step)
    plan.flops = {"budget": budget, "per_step": per_step, "steps": steps, "total": steps * per_step}
    plan.overrides.insert(len(plan.overrides) - 3, f"train.max_steps={steps}")  # before seed, name, run_dir
    cfg = cfg.copy()
    cfg.train.max_steps = steps
    return cfg
