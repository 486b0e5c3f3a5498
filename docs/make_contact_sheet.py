"""Draw docs/dataset_contact_sheet.png: rendered frames of the embedded dataset, one row per
subject (each in another action), one column per camera, plus the 2D targets (right side red,
left side blue, hidden joints as hollow circles).

    .venv/bin/python docs/make_contact_sheet.py [--res 128] [--out docs/dataset_contact_sheet.png]
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time

import numpy as np
from PIL import Image, ImageDraw

from hourglass_jax.data import mocap_render as mr
from hourglass_jax.skeleton import EDGES, SIDE

ROWS: tuple[tuple[str, str, int], ...] = (  # subject, action, subaction
    ("S1", "walk", 1), ("S5", "punch", 1), ("S6", "kick", 2), ("S7", "dance_a", 1),
    ("S8", "jump", 1), ("S9", "getup_faceup", 1), ("S11", "cartwheel", 2),
)
SIDE_RGB = {-1: (230, 60, 60), 0: (240, 240, 240), 1: (60, 110, 240)}


def draw_pose(img: Image.Image, pose2d: np.ndarray, visible: np.ndarray, zoom: float) -> None:
    """Skeleton of crop-px joints (16, 2) on an image scaled by `zoom`."""
    d = ImageDraw.Draw(img)
    p = (pose2d + 0.5) * zoom - 0.5
    for a, b in EDGES:
        side = SIDE[a] if SIDE[a] == SIDE[b] else 0
        d.line([tuple(p[a]), tuple(p[b])], fill=SIDE_RGB[side], width=2)
    for j, (x, y) in enumerate(p):
        r = 3
        box = [x - r, y - r, x + r, y + r]
        if visible[j]:
            d.ellipse(box, fill=SIDE_RGB[SIDE[j]])
        else:
            d.ellipse(box, outline=SIDE_RGB[SIDE[j]], width=1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__),
                                                  "dataset_contact_sheet.png"))
    args = ap.parse_args()
    t0 = time.time()
    tiles = []
    for subject, action, sub in ROWS:
        cfg = dataclasses.replace(mr.CONFIGS[0], name="sheet", res=args.res, actions=(action,))
        vids = [v for v in mr.video_frames(cfg, (subject,)) if int(v.subaction[0]) == sub]
        frames = mr.concat_frames([mr.take_frames(v, slice(len(v.frame) // 2, len(v.frame) // 2 + 1))
                                   for v in vids])
        out = mr.render_frames(frames, cfg)
        row = []
        for i, cam in enumerate(frames.camera):
            im = Image.fromarray(out["image"][i])
            draw_pose(im, out["pose2d"][i], out["visible"][i], 1.0)
            ImageDraw.Draw(im).text((3, 2), f"{subject} {action}.{sub} {cam}", fill=(255, 255, 255))
            row.append(np.asarray(im))
        tiles.append(np.concatenate(row, axis=1))
        print(f"row {subject}: {time.time() - t0:.1f} s")
    sheet = np.concatenate(tiles, axis=0)
    Image.fromarray(sheet).save(args.out)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]} px) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
