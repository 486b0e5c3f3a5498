"""Real-dataset build throughput, printed as JSON: how long preparing Human3.6M takes here.

Measured in one run on one machine, on a generated H36M-like take (a 1000 x 1000 px, 50 fps
H.264 video with textured frames, and its CDF poses):
* decode: every frame decoded by video.iter_frames, nothing else (the baseline);
* build: h36m.original_examples on the same take (decode, keep every 5th frame, crop, PNG),
  for 64 px (`small`) and 256 px (`full`) crops.
The ratio build/decode time says how much of a build is decoding. `h36m_hours` extrapolates to
the 7 subjects' ~2.1 M video frames (about 0.42 M examples at 10 fps) for one process.

    python benchmarks/realdata_bench.py [--frames 100]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from hourglass_jax.data import h36m, video  # noqa: E402

H36M_VIDEO_FRAMES = 2.1e6  # S1, S5-S9, S11 x 4 cameras at 50 fps (approximate)


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _write_take(root: str, n: int) -> h36m.Take:
    import imageio_ffmpeg
    from cdflib import cdfwrite

    rng = np.random.default_rng(0)
    pose_dir = os.path.join(root, "S1", "MyPoseFeatures", "D3_Positions_mono")
    os.makedirs(pose_dir)
    os.makedirs(os.path.join(root, "S1", "Videos"))
    pose = rng.normal(0, 300, (n, 32, 3)) + [0, 0, 4500.0]
    cdf = cdfwrite.CDF(os.path.join(pose_dir, "Walking.54138969.cdf"), delete=True)
    cdf.write_var({"Variable": "Pose", "Data_Type": cdfwrite.CDF.CDF_DOUBLE, "Num_Elements": 1,
                   "Rec_Vary": True, "Dim_Sizes": [n, 96]}, var_attrs={},
                  var_data=pose.reshape(1, n, 96))
    cdf.close()
    vid = os.path.join(root, "S1", "Videos", "Walking.54138969.mp4")
    w = imageio_ffmpeg.write_frames(vid, (1000, 1000), fps=50, codec="libx264",
                                    macro_block_size=8, ffmpeg_log_level="error")
    w.send(None)
    base = rng.integers(0, 255, (1000, 1000, 3), dtype=np.uint8)
    for i in range(n):  # a moving texture: compresses like camera footage, not like a flat frame
        w.send(np.roll(base, 7 * i, axis=1).tobytes())
    w.close()
    return h36m.scan_original(root, ("S1",))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100, help="frames of the generated take")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        _log("writing a 1000 x 1000 take ...")
        take = _write_take(root, args.frames)
        t = time.perf_counter()
        n = sum(1 for _ in video.iter_frames(take.video, args.frames, 1))
        decode_s = time.perf_counter() - t
        out = {"frames": n, "decode_fps": n / decode_s}
        for res in (64, 256):
            t = time.perf_counter()
            kept = sum(1 for _ in h36m.original_examples(take, res, 5))
            build_s = time.perf_counter() - t
            out[f"res{res}"] = {
                "examples": kept, "examples_per_s": kept / build_s,
                "build_over_decode": build_s / decode_s,
                "h36m_hours": H36M_VIDEO_FRAMES / n * build_s / 3600.0,
            }
            _log(f"{res} px: {kept / build_s:.1f} examples/s")
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
