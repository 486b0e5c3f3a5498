"""TFDS builder `mpii`: MPII Human Pose (manual download), the 2D set for pretraining the 2D stacks.

Layout read (Newell's stacked-hourglass annotation files, also used by the princeton-vl PyTorch
port):
    annot/train.h5, annot/valid.h5   center (N, 2) px, scale (N,), part (N, 16, 2) px (MPII-16
                                     order, (0, 0) where unannotated), visible (N, 16),
                                     imgname (N,) bytes, person (N,)
    images/<imgname>                 the MPII images (mpii_human_pose_v1.tar.gz)

Splits `train` and `validation` (valid.h5: 2,958 people). One example per annotated person, in
the shared schema of realdata.py, with:
- the crop as Newell's training code makes it: center moved down by 15 * scale px, box 1.25 x
  the annotated scale (NEWELL_CENTER_SHIFT, NEWELL_SCALE_MARGIN);
- pose3d, intrinsics, root_depth zeros and has_pose3d False (MPII has 2D labels only);
- visible = the joint is annotated (x > 0, the test Newell's and the PyTorch port's evaluation
  use); MPII's own occlusion flag is not kept, and pose2d of an unannotated joint (stored at
  (0, 0) in the file) means nothing;
- subject "MPII", action "", camera "", subaction the person's index in the file, sequence
  "<image name>/<person>", frame 0 (every person is a one-frame "video").
"""
from __future__ import annotations

import dataclasses
import logging
import os
import time
from typing import Iterator

import h5py
import numpy as np
from PIL import Image

from hourglass_jax.data import realdata
from hourglass_jax.data.realdata import LayoutError
from hourglass_jax.skeleton import NUM_JOINTS

log = logging.getLogger(__name__)

NEWELL_CENTER_SHIFT = 15.0  # px per unit scale: c_y += 15 s (Newell, pose-hg-train)
NEWELL_SCALE_MARGIN = 1.25  # s *= 1.25 (same source)
SPLIT_FILES: dict[str, str] = {"train": "train.h5", "validation": "valid.h5"}
PREPARE_HINT = ("put MPII's images/ (mpii_human_pose_v1.tar.gz) and Newell's annot/train.h5, "
                "annot/valid.h5 in MANUAL_DIR")


@dataclasses.dataclass(frozen=True)
class Annotations:
    """One annotation file: imgname (N,) str, center (N, 2) px, scale (N,), part (N, 16, 2) px,
    annotated (N, 16) bool."""

    imgname: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    part: np.ndarray
    annotated: np.ndarray

    def __len__(self) -> int:
        return len(self.imgname)


def read_annotations(path: str | os.PathLike) -> Annotations:
    """Read and check one of Newell's annot h5 files; LayoutError says what is wrong where."""
    p = realdata.require_file(path, "MPII annotation file (Newell's annot/*.h5)")
    want = {"imgname": (), "center": (2,), "scale": (), "part": (NUM_JOINTS, 2)}
    try:
        f = h5py.File(p, "r")
    except OSError as e:
        raise LayoutError(f"{p} is not an HDF5 file ({e}); expected Newell's annot h5") from e
    with f:
        missing = [k for k in want if k not in f]
        if missing:
            raise LayoutError(f"{p}: missing datasets {missing}; expected {sorted(want)} "
                              f"(found {sorted(f.keys())})")
        arr = {k: f[k][()] for k in want}
    n = len(arr["imgname"])
    for k, shape in want.items():
        if arr[k].shape != (n,) + shape:
            raise LayoutError(f"{p}: {k} has shape {arr[k].shape}, expected {(n,) + shape}")
    names = np.asarray([x.decode() if isinstance(x, bytes) else str(x) for x in arr["imgname"]])
    part = np.asarray(arr["part"], np.float64)
    scale = np.asarray(arr["scale"], np.float64)
    if not (np.all(np.isfinite(part)) and np.all(np.isfinite(scale)) and np.all(scale > 0)):
        raise LayoutError(f"{p}: part/scale hold non-finite or non-positive values")
    return Annotations(names, np.asarray(arr["center"], np.float64), scale, part,
                       part[..., 0] > 0)


def newell_box(center: np.ndarray, scale: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Annotated (center (..., 2), scale (...)) -> the training crop's (center, scale)."""
    c = np.array(center, np.float64)
    s = np.asarray(scale, np.float64)
    c[..., 1] += NEWELL_CENTER_SHIFT * s
    return c, s * NEWELL_SCALE_MARGIN


def examples(manual_dir: str, split: str, res: int) -> Iterator[tuple[str, dict]]:
    """(key, example) for every person of `split`."""
    a = read_annotations(os.path.join(manual_dir, "annot", SPLIT_FILES[split]))
    center, scale = newell_box(a.center, a.scale)
    start = time.time()
    cached_name, frame = None, None
    for i in range(len(a)):
        if a.imgname[i] != cached_name:  # people of one image are consecutive in the files
            path = realdata.require_file(
                os.path.join(manual_dir, "images", a.imgname[i]),
                f"MPII image of annotation {i} in annot/{SPLIT_FILES[split]}")
            frame = np.asarray(Image.open(path).convert("RGB"))
            cached_name = a.imgname[i]
        seq = f"{os.path.splitext(a.imgname[i])[0]}/{i}"
        ex = realdata.make_example(frame, None, a.part[i], None, res, subject="MPII", action="",
                                   subaction=i, camera="", frame_index=0,
                                   visible=a.annotated[i], center=center[i],
                                   scale=float(scale[i]), sequence=seq)
        yield seq, ex
        if (i + 1) % 500 == 0:
            rate = (i + 1) / (time.time() - start)
            log.info("mpii %s: %d/%d people, %.0f/s, ETA %.0f s", split, i + 1, len(a), rate,
                     (len(a) - i - 1) / rate)


class Mpii(realdata.RealBuilder):
    """MPII Human Pose in the shared schema (see the module docstring)."""

    name = "mpii"
    HOMEPAGE = "http://human-pose.mpi-inf.mpg.de"
    BUILDER_CONFIGS = [
        realdata.RealConfig(name="small", description="64 px crops", res=64),
        realdata.RealConfig(name="full", description="256 px crops", res=256),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (PREPARE_HINT + "; then run python -m "
                                    "hourglass_jax.data.prepare mpii --manual_dir=MANUAL_DIR")


    def _split_generators(self, dl_manager):
        manual = os.fspath(dl_manager.manual_dir)
        for name in SPLIT_FILES.values():  # both files checked before any image is read
            read_annotations(os.path.join(manual, "annot", name))
        realdata.require_dir(os.path.join(manual, "images"), "MPII images directory")
        return {split: self._generate_examples(manual, split) for split in SPLIT_FILES}

    def _generate_examples(self, manual: str, split: str):
        yield from examples(manual, split, self.builder_config.res)


def builder(config: str | realdata.RealConfig = "small", data_dir: str | os.PathLike | None = None,
            workers: int = 1) -> Mpii:
    """The array_record builder of `config` in `data_dir`; (`workers` is accepted for a uniform command line; MPII builds in one process in minutes.)"""
    return Mpii.make(config, data_dir, workers)


def prepare(manual_dir: str | os.PathLike, config: str | realdata.RealConfig = "small",
            data_dir: str | os.PathLike | None = None, workers: int = 1) -> Mpii:
    """Build the dataset from the user's copy in `manual_dir`; returns the prepared builder."""
    return Mpii.prepare_from(manual_dir, config, data_dir, workers)
