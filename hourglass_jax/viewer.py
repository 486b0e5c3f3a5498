"""A self-contained HTML viewer of a 3D pose sequence: one file, inline JavaScript, no network.

The page draws the skeleton on a canvas with a perspective camera: drag rotates it, the mouse
wheel zooms, a slider picks the frame, a button plays the sequence at its frame rate, and two
check boxes show or hide the raw predictions (red) and the completed poses (blue). The URL hash
sets the initial state, e.g. `viewer.html#frame=12&yaw=30&pitch=10&zoom=1.5&raw=1&completed=0`
(used by the headless-browser tests and handy for sharing a view).
"""
from __future__ import annotations

import html
import json
import os

import numpy as np

from hourglass_jax import skeleton

RAW_COLOUR = "#d62728"        # matplotlib tab:red, as viz.STYLES["prediction"]
COMPLETED_COLOUR = "#1f77b4"  # tab:blue, as viz.STYLES["optimisation"]

_TEMPLATE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>__TITLE__</title>
<style>
body { margin: 0; font: 13px sans-serif; background: #fff; }
#bar { padding: 4px 8px; display: flex; gap: 10px; align-items: center; flex-wrap: wrap; }
#slider { flex: 1; min-width: 120px; }
canvas { display: block; cursor: grab; }
</style></head>
<body>
<div id="bar">
<button id="play">play</button>
<input id="slider" type="range" min="0" max="0" value="0">
<span id="label"></span>
<label><input id="raw" type="checkbox" checked> <span style="color:__RAW__">raw</span></label>
<label><input id="completed" type="checkbox" checked>
 <span style="color:__COMPLETED__">completed</span></label>
</div>
<canvas id="view"></canvas>
<script>
"use strict";
const DATA = __DATA__;
const canvas = document.getElementById("view");
const ctx = canvas.getContext("2d");
const slider = document.getElementById("slider");
const label = document.getElementById("label");
const rawBox = document.getElementById("raw");
const compBox = document.getElementById("completed");
const playBtn = document.getElementById("play");
const F = DATA.raw.length;
const S = {frame: 0, yaw: 20, pitch: 10, zoom: 1.0, playing: null};

// Scene radius: the largest joint distance from the root over all frames and sequences.
let radius = 1;
for (const seq of [DATA.raw, DATA.completed || []])
  for (const pose of seq) for (const p of pose)
    radius = Math.max(radius, Math.hypot(p[0], p[1], p[2]));

function readHash() {
  const h = new URLSearchParams(location.hash.replace(/^#/, ""));
  const num = (k, d) => (h.has(k) && isFinite(parseFloat(h.get(k)))) ? parseFloat(h.get(k)) : d;
  S.frame = Math.min(F - 1, Math.max(0, Math.round(num("frame", 0))));
  S.yaw = num("yaw", S.yaw); S.pitch = num("pitch", S.pitch); S.zoom = num("zoom", S.zoom);
  if (h.has("raw")) rawBox.checked = h.get("raw") !== "0";
  if (h.has("completed")) compBox.checked = h.get("completed") !== "0";
}

function resize() {
  canvas.width = window.innerWidth;
  canvas.height = Math.max(100, window.innerHeight - document.getElementById("bar").offsetHeight);
}

// Camera-frame pose (x right, y down, z away) -> screen: rotate about the vertical axis (yaw)
// and the horizontal axis (pitch), then a perspective projection.
function toScreen(p) {
  const a = S.yaw * Math.PI / 180, b = S.pitch * Math.PI / 180;
  const x1 = Math.cos(a) * p[0] - Math.sin(a) * p[2];
  const z1 = Math.sin(a) * p[0] + Math.cos(a) * p[2];
  const y2 = Math.cos(b) * p[1] - Math.sin(b) * z1;
  const z2 = Math.sin(b) * p[1] + Math.cos(b) * z1;
  const dist = 4 * radius;
  const f = S.zoom * 0.45 * Math.min(canvas.width, canvas.height) * dist / radius;
  const d = Math.max(dist + z2, 0.1 * radius);
  return [canvas.width / 2 + f * x1 / d, canvas.height / 2 + f * y2 / d];
}

function drawPose(pose, colour) {
  const pts = pose.map(toScreen);
  ctx.lineWidth = 3; ctx.lineCap = "round";
  DATA.edges.forEach(([i, j]) => {
    // Edges touching the left side are lighter: shows which side is which.
    ctx.globalAlpha = DATA.side[i] + DATA.side[j] > 0 ? 0.6 : 1.0;
    ctx.strokeStyle = colour;
    ctx.beginPath(); ctx.moveTo(pts[i][0], pts[i][1]); ctx.lineTo(pts[j][0], pts[j][1]);
    ctx.stroke();
  });
  ctx.globalAlpha = 1.0; ctx.fillStyle = colour;
  for (const q of pts) { ctx.beginPath(); ctx.arc(q[0], q[1], 3, 0, 2 * Math.PI); ctx.fill(); }
}

// Thin grey x, y, z axes through the pelvis, for orientation while rotating.
function drawAxes() {
  ctx.strokeStyle = "#bbb"; ctx.lineWidth = 1;
  const r = radius;
  const axes = [[[-r, 0, 0], [r, 0, 0]], [[0, -r, 0], [0, r, 0]], [[0, 0, -r], [0, 0, r]]];
  for (const [a, b] of axes) {
    const p = toScreen(a), q = toScreen(b);
    ctx.beginPath(); ctx.moveTo(p[0], p[1]); ctx.lineTo(q[0], q[1]); ctx.stroke();
  }
}

function draw() {
  ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  drawAxes();
  if (rawBox.checked) drawPose(DATA.raw[S.frame], DATA.colours.raw);
  if (compBox.checked && DATA.completed) drawPose(DATA.completed[S.frame], DATA.colours.completed);
  slider.value = S.frame;
  label.textContent = "frame " + S.frame + " / " + (F - 1) +
    (DATA.names ? "  " + DATA.names[S.frame] : "");
  document.title = DATA.title + " - frame " + S.frame;
}

slider.max = F - 1;
if (!DATA.completed) { compBox.checked = false; compBox.disabled = true; }
slider.addEventListener("input", () => { S.frame = parseInt(slider.value, 10); draw(); });
rawBox.addEventListener("change", draw);
compBox.addEventListener("change", draw);
playBtn.addEventListener("click", () => {
  if (S.playing) {
    clearInterval(S.playing); S.playing = null; playBtn.textContent = "play"; return;
  }
  playBtn.textContent = "pause";
  S.playing = setInterval(() => { S.frame = (S.frame + 1) % F; draw(); }, 1000 / DATA.fps);
});
let drag = null;
canvas.addEventListener("mousedown", e => { drag = [e.clientX, e.clientY]; });
window.addEventListener("mouseup", () => { drag = null; });
window.addEventListener("mousemove", e => {
  if (!drag) return;
  S.yaw += 0.5 * (e.clientX - drag[0]);
  S.pitch = Math.max(-89, Math.min(89, S.pitch - 0.5 * (e.clientY - drag[1])));
  drag = [e.clientX, e.clientY]; draw();
});
canvas.addEventListener("wheel", e => {
  e.preventDefault();
  S.zoom = Math.max(0.1, Math.min(20, S.zoom * Math.exp(-0.001 * e.deltaY))); draw();
}, {passive: false});
window.addEventListener("hashchange", () => { readHash(); draw(); });
window.addEventListener("resize", () => { resize(); draw(); });
readHash(); resize(); draw();
</script></body></html>
"""


def _check_poses(poses: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(poses, np.float64)
    if a.ndim != 3 or a.shape[1:] != (skeleton.NUM_JOINTS, 3) or len(a) == 0:
        raise ValueError(f"{name} must be (F, {skeleton.NUM_JOINTS}, 3) mm with F >= 1, "
                         f"got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} contains {int(np.sum(~np.isfinite(a)))} NaN/inf values")
    return a


def write_viewer(path: str | os.PathLike, raw: np.ndarray, completed: np.ndarray | None = None,
                 fps: float = 25.0, title: str = "3D poses",
                 names: list[str] | None = None) -> str:
    """Writes the viewer page for a sequence; returns the absolute path.

    Args:
      path: the .html file to write.
      raw: (F, 16, 3) mm root-relative poses, camera axes (x right, y down, z away).
      completed: optional (F, 16, 3) mm, the completed poses (the raw/completed toggle).
      fps: playback rate, frames per second (> 0).
      title: page title. names: optional F frame names shown beside the frame number.
    Raises ValueError for bad shapes, NaN, mismatched frame counts or a non-positive fps.
    """
    raw = _check_poses(raw, "raw poses")
    if completed is not None:
        completed = _check_poses(completed, "completed poses")
        if completed.shape != raw.shape:
            raise ValueError(f"completed poses {completed.shape} do not match raw {raw.shape}")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be > 0, got {fps}")
    if names is not None and len(names) != len(raw):
        raise ValueError(f"{len(names)} names for {len(raw)} frames")
    data = {
        "raw": np.round(raw, 1).tolist(),  # 0.1 mm is far below any pose error
        "completed": None if completed is None else np.round(completed, 1).tolist(),
        "edges": [list(e) for e in skeleton.EDGES], "side": list(skeleton.SIDE),
        "fps": float(fps), "title": title, "names": names,
        "colours": {"raw": RAW_COLOUR, "completed": COMPLETED_COLOUR},
    }
    # "</" must not appear inside the inline script (a name could close the <script> tag).
    blob = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    page = (_TEMPLATE.replace("__DATA__", blob).replace("__TITLE__", html.escape(title))
            .replace("__RAW__", RAW_COLOUR).replace("__COMPLETED__", COMPLETED_COLOUR))
    path = os.path.abspath(os.fspath(path))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(page)
    return path
