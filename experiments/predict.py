r"""3D poses from an image, a folder of images or a video, with a trained volumetric network.

    python -m experiments.predict --checkpoint=runs/demo_s1 --input=clip.mp4 --output=out \
        [--boxes=boxes.json] [--complete --tau=0.7] [--gif] [--mp4] [--png] [--html]

--checkpoint: an exported network (a directory with model_config.json and variables/) or an
experiment workdir (then finetune/bone/model if present, else train3d/model; the choice is printed).

Crops: per-frame person boxes from --boxes (JSON list or CSV rows of x0,y0,x1,y1 px, one per
frame; the crop is the square of side max(width, height) about the box centre); without
--boxes, a centred square crop of side max(H, W) covering the whole frame, as c2f-vol's demo
does (the person should be centred and fill the frame's height).

Camera: in-the-wild input has no calibration, so x, y are back-projected with a nominal camera
(--fov_deg horizontal field of view, principal point at the frame centre) at a nominal pelvis
depth: by default the depth at which the crop box spans --box_mm (2200 mm, like the training
crops), or --root_depth_mm if given (e.g. 5000, Human3.6M-like). Outputs are root-relative mm;
the nominal camera only sets the scale of x / y against the predicted depth (z).

Writes to --output: predictions.npz and predictions.json (pose3d (F, 16, 3) mm root-relative,
pose2d (F, 16, 2) px in the frame, confidence (F, 16), and with --complete pose3d_completed,
pose2d_completed, observed), plus the pictures asked for (viewer.html, predictions.gif,
predictions.mp4, frames/*.png).
"""
from __future__ import annotations

import os
import sys
import time

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "Exported volumetric network directory, or an "
                    "experiment workdir (finetune/bone/model if present, else train3d/model).")
flags.DEFINE_string("input", None, "An image, a folder of images, or a video (mp4/avi/...).")
flags.DEFINE_string("output", None, "Output directory.")
flags.DEFINE_string("boxes", None, "JSON/CSV of per-frame person boxes x0,y0,x1,y1 px; default: "
                    "a centred square crop of the whole frame (c2f-vol's demo convention).")
flags.DEFINE_bool("complete", False, "Run trajectory completion (Eq. 1) over the predictions, "
                  "holding joints with confidence > --tau, and write the completed poses too.")
flags.DEFINE_float("tau", 0.7, "Confidence threshold of --complete.")
flags.DEFINE_bool("gif", False, "Write predictions.gif: each frame with its 2D skeleton beside "
                  "a 3D view (raw red, completed blue).")
flags.DEFINE_bool("mp4", False, "Write predictions.mp4 (same pictures as --gif).")
flags.DEFINE_bool("png", False, "Write frames/frame_NNNNNN.png (same pictures as --gif).")
flags.DEFINE_bool("html", False, "Write viewer.html: a self-contained 3D viewer (no network).")
flags.DEFINE_float("fov_deg", 47.0, "Nominal horizontal field of view, degrees (H36M ~ 47).")
flags.DEFINE_float("root_depth_mm", None, "Nominal pelvis depth, mm (sets the x/y vs z scale); "
                   "default: the depth at which the crop box spans --box_mm.")
flags.DEFINE_float("box_mm", 2200.0, "Physical side of the person's crop box, mm (1.3 x a "
                   "~1.7 m person, as in training), for the default pelvis depth.")
flags.DEFINE_integer("softargmax_k", None, "Soft-argmax cube side; default: the workdir's "
                     "config.json model.softargmax_k, else 3.")
flags.DEFINE_integer("batch_size", 8, "Frames per network call.")
flags.DEFINE_float("fps", None, "Playback rate of pictures/viewer; default: the video's, or 10.")


def _workdir_k(checkpoint: str) -> int | None:
    """model.softargmax_k of an experiment workdir's config.json (None if absent)."""
    import json
    for d in (checkpoint, os.path.join(checkpoint, os.pardir, os.pardir),
              os.path.join(checkpoint, os.pardir, os.pardir, os.pardir)):
        path = os.path.join(d, "config.json")
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    k = json.load(f)["model"]["softargmax_k"]
                return int(k)
            except (OSError, ValueError, KeyError, TypeError):
                continue  # some other config.json: not an experiment's

    return None


def run(checkpoint: str, input_path: str, output: str, boxes: str | None = None,
        complete: bool = False, tau: float = 0.7, gif: bool = False, mp4: bool = False,
        png: bool = False, html: bool = False, fov_deg: float = 47.0,
        root_depth_mm: float | None = None, box_mm: float = 2200.0,
        softargmax_k: int | None = None, batch_size: int = 8,
        fps: float | None = None) -> dict[str, str]:
    """The whole CLI as a function (tests call it); returns {what: path written}.

    Raises ValueError for bad input (missing/unreadable input, a video without frames, boxes
    of the wrong count, a checkpoint that is missing or not a volumetric network).
    """
    from hourglass_jax import inference
    t0 = time.time()
    source = inference.open_input(input_path)
    print(f"predict: {source.kind} {source.path}: {source.num_frames} frame(s)", flush=True)
    box_arr = None if boxes is None else inference.load_boxes(boxes, source.num_frames)
    _, cfg, variables, note = inference.load_volumetric(checkpoint)
    print(f"predict: {note}", flush=True)
    k = softargmax_k or _workdir_k(os.path.abspath(checkpoint)) or inference.DEFAULT_K
    pred = inference.predict(source, cfg, variables, boxes=box_arr, k=k, fov_deg=fov_deg,
                             root_depth_mm=root_depth_mm, box_mm=box_mm,
                             batch_size=batch_size)
    if complete:
        pred = inference.complete_predictions(pred, tau)
        print(f"predict: completed {len(pred.pose3d)} frames, {pred.observed.mean():.1%} of the "
              f"joints above tau = {tau} held fixed", flush=True)
    meta = {"input": source.path, "checkpoint": note, "softargmax_k": k, "fov_deg": fov_deg,
            "root_depth_mm": root_depth_mm, "box_mm": box_mm, "tau": tau if complete else None,
            "crop": "boxes from " + boxes if boxes else "centred square of side max(H, W)"}
    written = inference.save_predictions(pred, output, meta)
    rate = fps or source.fps or 10.0
    if gif or mp4 or png:
        from hourglass_jax import animate

        def pictures():
            return animate.render_sequence(source.frames(), pred.pose2d, pred.pose3d,
                                           pred.pose2d_completed, pred.pose3d_completed,
                                           pred.names)
        if png:
            written["png"] = os.path.join(output, "frames")
            animate.write_pngs(pictures(), written["png"])
        if gif:
            written["gif"] = animate.write_gif(pictures(), os.path.join(output, "predictions.gif"),
                                               rate)
        if mp4:
            written["mp4"] = animate.write_mp4(pictures(), os.path.join(output, "predictions.mp4"),
                                               rate)
    if html:
        from hourglass_jax import viewer
        written["html"] = viewer.write_viewer(os.path.join(output, "viewer.html"), pred.pose3d,
                                              pred.pose3d_completed, rate,
                                              os.path.basename(source.path), pred.names)
    for what, path in written.items():
        print(f"predict: wrote {what}: {path}", flush=True)
    print(f"predict: done in {time.time() - t0:.1f}s", flush=True)
    return written


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    for name in ("checkpoint", "input", "output"):
        if not getattr(FLAGS, name):
            raise app.UsageError(f"--{name} is required")
    try:
        run(FLAGS.checkpoint, FLAGS.input, FLAGS.output, boxes=FLAGS.boxes,
            complete=FLAGS.complete, tau=FLAGS.tau, gif=FLAGS.gif, mp4=FLAGS.mp4, png=FLAGS.png,
            html=FLAGS.html, fov_deg=FLAGS.fov_deg, root_depth_mm=FLAGS.root_depth_mm,
            box_mm=FLAGS.box_mm, softargmax_k=FLAGS.softargmax_k, batch_size=FLAGS.batch_size,
            fps=FLAGS.fps)
    except ValueError as e:
        print(f"predict: error: {e}", file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
