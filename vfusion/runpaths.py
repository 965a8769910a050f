"""The paths in a run's ``config.yaml``, recorded so that the run directory can be copied or moved.

A run records each path key (``PATH_KEYS``) relative to its own directory when the path lies inside it,
else as an absolute path, and :meth:`vfusion.rundir.RunDir.config` reads the relative ones back against
wherever the directory is now (:func:`vfusion.rundir.resolve_paths`). So ``cp -r`` / ``mv`` of a run, then any working directory, still finds
its files; the data and the weights the user named stay where they are.

A base UNet that stage 1 wrote (``<stage-1 run>/base_unet``) is part of what a stage-2 run is made of:
the run keeps a copy in ``RUN/base/`` (:func:`keep_base`) and records ``model.base.pretrained: base``,
so export, sample, evaluate and ``train --resume`` work without the stage-1 folder.

Torch-free: it only knows paths and config keys.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from vfusion.rundir import PATH_KEYS, RunDir


def outside_stage1_base(cfg: DictConfig, run_dir) -> Optional[Path]:
    """The folder of ``model.base.pretrained`` when stage 1 wrote it (the run it is in says ``stage: pretrain``
    in ``run_info.json``) and it is not inside ``run_dir``, else None."""
    path = cfg.model.base.pretrained
    if not path or not Path(path).is_dir():
        return None
    parent = Path(path).resolve().parent
    info = RunDir(parent).read_run_info() or {}
    return Path(path) if info.get("stage") == "pretrain" and parent != Path(run_dir).resolve() else None


def recorded_config(cfg: DictConfig, run_dir) -> DictConfig:
    """``cfg`` as ``run_dir/config.yaml`` records it: a stage-1 base as the run's own copy, paths inside
    the run relative to it, every other path absolute."""
    run = RunDir(run_dir)
    out = cfg.copy()
    if outside_stage1_base(out, run.path) is not None:
        out.model.base.pretrained = str(run.base_dir)
    for key in PATH_KEYS:
        value = OmegaConf.select(out, key)
        if value:
            OmegaConf.update(out, key, _recorded(str(value), run.path))
    return out


def _recorded(value: str, run_dir: Path) -> str:
    path = Path(os.path.abspath(Path(value).expanduser()))
    try:
        return path.resolve().relative_to(run_dir.resolve()).as_posix()
    except ValueError:
        return str(path)


def keep_base(cfg: DictConfig, run_dir) -> None:
    """Copy a stage-1 base UNet into ``RUN/base/`` (replacing an earlier copy atomically)."""
    src = outside_stage1_base(cfg, run_dir)
    if src is None:
        return
    from vfusion.utils.io import replace_dir

    dest = RunDir(run_dir).base_dir
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp)
    replace_dir(tmp, dest)
