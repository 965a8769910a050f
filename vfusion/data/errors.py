"""Dataset errors and the one place that says where each dataset comes from.

A :class:`DatasetError` is a :class:`vfusion.errors.UserError`: the command line prints it
as one message (what is wrong, what layout was expected, how to fix it) without a
traceback.
"""

from __future__ import annotations

from vfusion.errors import UserError


class DatasetError(UserError):
    """A missing, empty or malformed dataset, or an unreadable file under ``data.strict``."""


# expected layout and origin of each dataset, quoted in error messages (and in data/README.md)
LAYOUTS = {
    "ucf101": (
        "UCF-101: <root>/UCF-101/<Class>/v_<Class>_gXX_cYY.avi with <root>/ucfTrainTestlist/"
        "{classInd.txt,trainlist0K.txt,testlist0K.txt} beside it (or inside the class folder, or "
        "data.splits_dir=PATH). Get UCF101.rar and UCF101TrainTestSplits-RecognitionTask.zip from "
        "https://www.crcv.ucf.edu/data/UCF101.php and unpack both into <root>"
    ),
    "sky": (
        "Sky Time-lapse: <root>/sky_train/ and <root>/sky_test/, each holding frame folders "
        "<video>/<video>_<k>/*.jpg (or one level, <video>/*.jpg). Get sky_timelapse.zip from the "
        "MD-GAN project (https://github.com/weixiong-ur/mdgan) and unpack it into <root>"
    ),
    "folder": (
        "folder: <root> holding video files (.mp4, .avi, .mkv, .mov, .webm, ...) and/or folders of "
        "frames (.jpg/.png), at any depth; optional <root>/train and <root>/test; with "
        "data.labels_from_subfolders=true the first-level subfolders are the classes"
    ),
    "captions": (
        "captions: <root> holding video files (or frame folders) as in the folder layout, each with its caption "
        "in NAME.txt beside it (video2dataset's layout: 00000/000000001.mp4 + 00000/000000001.txt), or in "
        "<root>/captions.csv (or data.captions_file) with columns video,caption and paths relative to <root>"
    ),
    "webvid": (
        "webvid: WebVid's metadata CSV (columns videoid,name,page_dir,...) in <root> (or data.captions_file) "
        "and the videos at <root>/<page_dir>/<videoid>.mp4"
    ),
    "embedded": (
        "embedded: the procedural dataset, written in the UCF-101 layout to <root> on first use "
        "(no download); run `vfusion data cache --config configs/<experiment>.yaml` or any training "
        "command to generate it"
    ),
    "embedded_text": (
        "embedded_text: the embedded procedural dataset (written to <root> on first use, no download) with "
        "each clip's caption made from its drawn parameters"
    ),
}


def layout_error(dataset: str, problem: str) -> DatasetError:
    """An error for ``problem`` that also states the expected layout and where to get the data."""
    return DatasetError(f"{problem}. Expected {LAYOUTS[dataset]}.")
