"""CLI: ``vfusion data check`` (is a dataset laid out as expected?), ``vfusion data caption`` and
``vfusion data cache``.

``data check --dataset NAME --root PATH [--fold K] [--split S]``
lists and opens every video of the split and prints the counts (videos, classes,
frames, short, unreadable, missing; for captioned datasets the captions, those missing, empty or
unreadable, and their length, in tokens with ``--tokenizer DIR``); exit code 1 when the layout is wrong. NAME is one of
``vfusion.data.registry.dataset_names()``.
``data caption --root DIR --model MODEL_DIR [--frames K] [--overwrite]`` writes sidecar captions
(:mod:`vfusion.data.recaption`).
``data cache --config CFG [key=value ...]`` builds the configured ``data.cache``
(clips or latents) for ``data.split`` and ``data.eval_split``, with a progress bar.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    from vfusion.data.registry import SPLITS, dataset_names

    data = subparsers.add_parser("data", help="check a dataset's layout, build its caches",
                                 description="Check a dataset's layout or build the configured cache.")
    data.set_defaults(func=lambda args: (data.print_help(), 1)[1])
    sub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND")

    check = sub.add_parser("check", help="count videos, classes, frames, short and unreadable files",
                           description="List and open every video of a split; exit code 1 when the layout is wrong.")
    check.add_argument("--dataset", required=True, choices=dataset_names())
    check.add_argument("--root", required=True, help="dataset root (see data/README.md for each layout)")
    check.add_argument("--fold", type=int, default=1, choices=(1, 2, 3), help="UCF-101 fold (default 1)")
    check.add_argument("--split", default="train", choices=SPLITS)
    check.add_argument("--splits-dir", default=None, help="UCF-101: the ucfTrainTestlist folder, if not beside the videos")
    check.add_argument("--labels-from-subfolders", action="store_true", help="folder: first-level subfolders are classes")
    check.add_argument("--num-frames", type=int, default=16, help="clip length used to count short videos (16)")
    check.add_argument("--stride", type=int, default=1, help="frame stride used to count short videos (1)")
    check.add_argument("--decode", action="store_true", help="also decode one clip of every video")
    check.add_argument("--captions-file", default=None,
                       help="captions / webvid: the captions CSV or WebVid metadata CSV (default: found in --root)")
    check.add_argument("--tokenizer", default=None, metavar="DIR",
                       help="captioned datasets: a text base folder (tokenizer/) or tokenizer folder, to count caption "
                            "tokens and those cut at its limit (default: words)")
    check.set_defaults(func=_check)

    caption = sub.add_parser("caption", help="write sidecar NAME.txt captions with an image-to-text model",
                             description="Caption every video under --root with a transformers image-to-text model "
                                         "(e.g. BLIP) run on its keyframe (or --frames K frames), into NAME.txt "
                                         "beside it. Existing captions are kept unless --overwrite; a rerun resumes.")
    caption.add_argument("--root", required=True, help="a folder of videos (any depth)")
    caption.add_argument("--model", required=True, metavar="DIR",
                         help="a transformers image-to-text folder with its processor (e.g. BLIP)")
    caption.add_argument("--frames", type=int, default=1,
                         help="1: the keyframe (middle frame); K: K evenly spaced frames, captions joined (default 1)")
    caption.add_argument("--max-new-tokens", type=int, default=30, help="longest caption in tokens (default 30)")
    caption.add_argument("--overwrite", action="store_true", help="replace existing NAME.txt captions")
    caption.add_argument("--device", default=None, help="cpu / cuda (default cpu)")
    caption.add_argument("--no-progress", action="store_true", help="no progress bar")
    caption.set_defaults(func=_caption, on_interrupt="captions written so far are kept; rerun to resume")

    cache = sub.add_parser("cache", help="build the configured data cache (data.cache=clips|latents)",
                           description="Build the cache that data.cache selects, for data.split and data.eval_split.")
    cache.add_argument("--config", required=True, help="experiment YAML (e.g. configs/ucf101.yaml)")
    cache.add_argument("overrides", nargs="*", help="key=value config overrides (e.g. data.cache=clips)")
    cache.add_argument("--split", default=None, choices=SPLITS,
                       help="only this split (default: data.split and data.eval_split)")
    cache.add_argument("--workers", type=int, default=None, help="decoding processes (default: data.num_workers)")
    cache.add_argument("--device", default=None, help="VAE device for data.cache=latents (default: cuda if available)")
    cache.set_defaults(func=_cache)


def _check(args: argparse.Namespace) -> int:
    import warnings

    from omegaconf import OmegaConf

    from vfusion.config import DataConfig
    from vfusion.data.errors import DatasetError
    from vfusion.data.index import build_index

    cfg = OmegaConf.structured(DataConfig(dataset=args.dataset, root=args.root, fold=args.fold, split=args.split,
                                          splits_dir=args.splits_dir, labels_from_subfolders=args.labels_from_subfolders,
                                          num_frames=args.num_frames, frame_stride=args.stride, short_policy="loop",
                                          captions_file=args.captions_file, missing_caption="skip"))
    tokenizer = None
    if args.tokenizer:   # a wrong folder is refused before the videos are opened
        from vfusion.text import load_tokenizer

        tokenizer = load_tokenizer(args.tokenizer)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")       # everything a warning would say is printed below
            listing = _listing(cfg)
            index = build_index(listing, cfg.num_frames, cfg.frame_stride, "loop", cache_dir=None)
    except DatasetError as err:
        print(f"vfusion data check: layout error: {err}", file=sys.stderr)
        return 1
    counts = index.counts()
    print(f"{listing.description}")
    per_class = [sum(1 for it in index.items if it.label == c) for c in range(len(index.class_names))]
    print(f"  classes      {len(index.class_names)}" +
          (f" ({min(per_class)}-{max(per_class)} readable videos per class)" if len(per_class) > 1 else ""))
    print(f"  listed       {counts['listed']}")
    print(f"  readable     {counts['videos']}")
    print(f"  frames       {counts['frames']}" + (f" (mean {counts['frames'] / max(1, counts['videos']):.1f} per video)"))
    print(f"  short        {counts['short']} (< {(cfg.num_frames - 1) * cfg.frame_stride + 1} frames)")
    print(f"  unreadable   {counts['unreadable']}")
    print(f"  missing      {counts['missing']} (in a split or captions file, not on disk)")
    if listing.captioned:
        _print_captions(index, listing, tokenizer)
    for line in index.unreadable[:20]:
        print(f"    unreadable: {line}")
    for key in listing.missing[:20]:
        print(f"    missing: {key}")
    if args.decode:
        failed = _decode_all(cfg, index)
        print(f"  undecodable  {len(failed)}")
        for line in failed[:20]:
            print(f"    undecodable: {line}")
    return 0


def _print_captions(index, listing, tokenizer) -> None:
    from vfusion.data.caption_report import caption_report, report_lines

    report = caption_report([it.caption for it in index.items], listing.caption_skipped, tokenizer)
    for line in report_lines(report):
        print(line)
    for line in listing.caption_skipped[:20]:
        print(f"    no caption: {line}")


def _listing(cfg):
    from vfusion.data import build_listing
    from vfusion.data.errors import layout_error

    from vfusion.data.registry import has_captions, is_generated

    if not is_generated(cfg.dataset):
        return build_listing(cfg, cfg.split)
    import json
    from pathlib import Path

    from vfusion.data.embedded import with_captions
    from vfusion.data.ucf101 import list_ucf101

    marker = Path(cfg.root) / "embedded.json"
    if not marker.is_file():  # a check reads what is there: it never generates
        raise layout_error(cfg.dataset, f"'{cfg.root}' holds no generated embedded dataset (no embedded.json)")
    listing = list_ucf101(cfg.root, cfg.split, cfg.fold, dataset="embedded")
    return with_captions(listing, json.loads(marker.read_text())) if has_captions(cfg.dataset) else listing


def _decode_all(cfg, index) -> list[str]:
    from tqdm import tqdm

    from vfusion.data.api import _clip_dataset
    from vfusion.data.sources import UnreadableVideo

    ds = _clip_dataset(cfg, index, train=False, seed=0)
    failed = []
    for i in tqdm(range(len(ds)), desc="decoding", unit="video", leave=False):
        try:
            ds.reader.read(index.items[i], ds.frame_indices(i, 0.999))
        except UnreadableVideo as err:
            failed.append(str(err))
    return failed


def _caption(args: argparse.Namespace) -> int:
    from pathlib import Path

    from vfusion.data.recaption import Captioner, caption_folder
    from vfusion.errors import UserError

    if args.frames < 1 or args.max_new_tokens < 1:
        raise UserError("--frames and --max-new-tokens must be at least 1")
    if not Path(args.root).is_dir():
        raise UserError(f"--root {args.root} is not a folder")
    captioner = Captioner(args.model, max_new_tokens=args.max_new_tokens, device=args.device)  # before any write
    caption_folder(args.root, captioner, frames=args.frames, overwrite=args.overwrite, progress=not args.no_progress)
    return 0


def _cache(args: argparse.Namespace) -> int:
    from vfusion.errors import UserError
    from vfusion.config import load_config
    from vfusion.data.cache import read_manifest
    from vfusion.data.registry import check_data_section, is_generated
    from vfusion.data import ensure_cache
    from vfusion.data.embedded import ensure_embedded

    cfg = load_config(args.config, args.overrides)
    check_data_section(cfg)  # this command reads the data section only
    data = cfg.data
    if is_generated(data.dataset):
        print(f"embedded dataset: {ensure_embedded(data)}")
    if data.cache == "none":
        if is_generated(data.dataset):
            print("data.cache is 'none': nothing else to build (set data.cache=clips or latents for a cache)")
            return 0
        raise UserError("data.cache is 'none': set data.cache=clips (decoded uint8 clips) or data.cache=latents "
                        "(VAE latents, needs data.vae_path) in the config or as an override")
    splits = [args.split] if args.split else list(dict.fromkeys([data.split, data.eval_split]))
    for split in splits:
        path = ensure_cache(data, split, num_workers=args.workers, device=args.device)
        manifest = read_manifest(path)
        counts = manifest["counts"] if manifest else {}
        print(f"{data.cache} cache of {data.dataset} {split}: {path} "
              f"({counts.get('videos', '?')} videos, {counts.get('unreadable', 0)} unreadable, "
              f"{counts.get('skipped_short', 0)} skipped as short)")
    return 0
