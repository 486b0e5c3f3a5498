r"""docs/predict_example.gif: `experiments.predict` on a video of the embedded dataset.

Takes one validation video (subject S9, never trained on) of the embedded `mocap_render`
dataset, writes its frames as an MP4 (the dataset stores each frame as the person's crop, so
the default centred crop of the CLI is the dataset's crop), runs the prediction CLI with
--complete --gif --html on it, and copies the GIF here.

    make demo                                   # trains runs/demo_s1 (once)
    python docs/make_predict_example.py --workdir=runs/demo_s1

The second command runs, after writing <out>/clip.mp4:
    python -m experiments.predict --checkpoint=runs/demo_s1 --input=<out>/clip.mp4 \
        --output=<out> --complete --tau=0.3 --gif --html
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

from experiments import predict  # noqa: E402
from hourglass_jax.data import mocap_render, pipeline  # noqa: E402
from hourglass_jax.inference import quiet_fork  # noqa: E402


def write_clip(path: str, frames: np.ndarray, fps: float) -> str:
    """(F, H, W, 3) uint8 -> an H.264 MP4 with imageio-ffmpeg's ffmpeg."""
    import imageio_ffmpeg
    h, w = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, macro_block_size=1,
                                         quality=9)
    with quiet_fork():
        writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workdir", default="runs/demo_s1", help="trained experiment workdir")
    ap.add_argument("--out", default="/tmp/predict_example", help="working directory")
    ap.add_argument("--action", default="walk", help="embedded-dataset action")
    ap.add_argument("--frames", type=int, default=40, help="frames of the clip")
    ap.add_argument("--tau", type=float, default=0.3,
                    help="confidence threshold of --complete (0.3 holds ~3/4 of the demo "
                         "network's joints, about the share 0.7 holds for the paper's)")
    ap.add_argument("--dest", default=os.path.join(HERE, "predict_example.gif"))
    args = ap.parse_args(argv)
    with open(os.path.join(args.workdir, "config.json"), encoding="utf-8") as f:
        data_cfg = json.load(f)["data"]
    data_dir = data_cfg["data_dir"] or os.environ.get("HOURGLASS_DATA_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "hourglass_jax", "tfds")
    src = mocap_render.load(data_cfg["builder_config"], data_dir)["validation"]
    seq, batch = next(pipeline.read_sequences(src, subjects=("S9",), actions=(args.action,)))
    frames = np.round(batch["image"][:args.frames] * 255.0).astype(np.uint8)
    os.makedirs(args.out, exist_ok=True)
    clip = write_clip(os.path.join(args.out, "clip.mp4"), frames, fps=10.0)
    print(f"example: {seq}, {len(frames)} frames of {frames.shape[1]} px -> {clip}", flush=True)
    written = predict.run(args.workdir, clip, args.out, complete=True, tau=args.tau, gif=True,
                          html=True)
    shutil.copyfile(written["gif"], args.dest)
    print(f"example: wrote {args.dest}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
