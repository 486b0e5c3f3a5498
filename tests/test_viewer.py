"""The HTML viewer, rendered by headless Chromium: a skeleton is drawn, and the frame, the
raw/completed toggle and the view all change the pixels. Pictures: animate's 2D overlay."""
from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from hourglass_jax import animate, viewer
from hourglass_jax.skeleton import NUM_JOINTS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium not installed (Debian: apt-get install -y "
                             "chromium; .ci/run installs it when it can)")


BAR_PX = 50


def _pose(arm_angle_deg: float) -> np.ndarray:
    """A standing skeleton (mm, camera axes, y down) with both arms raised by arm_angle_deg."""
    p = np.zeros((NUM_JOINTS, 3))
    p[[0, 1, 2], 0] = -100
    p[[3, 4, 5], 0] = 100
    p[[0, 5], 1], p[[1, 4], 1] = 900, 450
    p[7, 1], p[8, 1], p[9, 1] = -500, -600, -800
    p[12, :2], p[13, :2] = (-200, -500), (200, -500)
    a = np.radians(arm_angle_deg)
    for side, (elbow, wrist) in ((-1, (11, 10)), (1, (14, 15))):
        d = np.array([side * np.cos(a), -np.sin(a), 0.0])   # raised = up = -y
        p[elbow] = p[12 if side < 0 else 13] + 300 * d
        p[wrist] = p[elbow] + 300 * d
    return p


def _colour_mask(img: np.ndarray, rgb: str) -> np.ndarray:
    """Pixels within 60 (per channel) of the hex colour."""
    target = np.array([int(rgb[i:i + 2], 16) for i in (1, 3, 5)])
    return np.all(np.abs(img[..., :3].astype(int) - target) < 60, axis=-1)


def _shot(page: str, tmp_path, hash_: str, name: str) -> np.ndarray:
    out = tmp_path / f"{name}.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
           "--no-first-run", "--disable-background-networking", "--disable-component-update",
           "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={out}",
           "--window-size=600,400", f"file://{page}#{hash_}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.exists(), \
        f"chromium wrote no screenshot (rc {proc.returncode}): {proc.stderr[-800:]}"
    # Rows below the one-line tool bar (whose labels are in the same colours): the canvas.
    return np.asarray(Image.open(out).convert("RGB"))[BAR_PX:]


@needs_chromium
def test_viewer_draws_and_frame_changes_pixels(tmp_path):
    raw = np.stack([_pose(a) for a in (-60, -30, 0, 30, 60)])      # arms down ... up
    completed = raw + np.array([0.0, 0.0, 0.0])
    completed[:, 10:16, 1] -= 80                                       # arms differ a little
    page = viewer.write_viewer(tmp_path / "v.html", raw, completed, fps=5, title="t")
    only_raw = "raw=1&completed=0"
    first = _shot(page, tmp_path, f"frame=0&{only_raw}", "f0")
    last = _shot(page, tmp_path, f"frame=4&{only_raw}", "f4")
    red0, red4 = _colour_mask(first, viewer.RAW_COLOUR), _colour_mask(last, viewer.RAW_COLOUR)
    assert red0.sum() > 200 and red4.sum() > 200, "no skeleton drawn"
    assert not _colour_mask(first, viewer.COMPLETED_COLOUR).any(), "completed shown while off"
    # Arms down vs up: the red pixels move (the legs and trunk stay where they were).
    assert (red0 ^ red4).sum() > 100
    assert (red0 & red4).sum() > 50
    # Arms raised (frame 4) reach higher on screen than lowered (frame 0).
    assert np.argwhere(red4)[:, 0].min() < np.argwhere(red0)[:, 0].min()
    # Completed only: blue, no red; a yaw of 90 degrees changes the picture.
    comp = _shot(page, tmp_path, "frame=0&raw=0&completed=1", "c0")
    assert _colour_mask(comp, viewer.COMPLETED_COLOUR).sum() > 200
    assert not _colour_mask(comp, viewer.RAW_COLOUR).any()
    turned = _shot(page, tmp_path, f"frame=0&{only_raw}&yaw=90&pitch=0", "y90")
    assert (_colour_mask(turned, viewer.RAW_COLOUR) ^ red0).sum() > 100


def test_viewer_page_is_self_contained_and_rejects_bad_input(tmp_path):
    raw = np.stack([_pose(0), _pose(30)])
    page = open(viewer.write_viewer(tmp_path / "v.html", raw, names=["a</script>", "b"]),
                encoding="utf-8").read()
    for needle in ("http://", "https://", "<link", "src="):
        assert needle not in page, f"page refers to something outside it: {needle}"
    assert page.count("</script>") == 1, "a name closed the inline script"
    with pytest.raises(ValueError, match=r"raw poses must be \(F, 16, 3\)"):
        viewer.write_viewer(tmp_path / "x.html", raw[:, :15])
    bad = raw.copy()
    bad[1, 3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        viewer.write_viewer(tmp_path / "x.html", bad)
    with pytest.raises(ValueError, match="do not match"):
        viewer.write_viewer(tmp_path / "x.html", raw, raw[:1])
    with pytest.raises(ValueError, match="fps"):
        viewer.write_viewer(tmp_path / "x.html", raw, fps=0)


def test_render_frame_overlays_both_skeletons():
    """The 2D skeletons land on the frame where their joints are: raw red on the left half of a
    grey frame, completed blue on the right half; the 3D view is drawn beside the frame."""
    h, w = 120, 160
    frame = np.full((h, w, 3), 128, np.uint8)
    raw2d = np.stack([np.linspace(10, 60, NUM_JOINTS), np.linspace(10, 110, NUM_JOINTS)], 1)
    comp2d = raw2d + [90, 0]
    pic = animate.render_frame(frame, raw2d, _pose(0), comp2d, _pose(30), height_px=240)
    assert pic.shape[0] == 240 and pic.shape[1] > 240 * w / h and pic.dtype == np.uint8
    # The frame panel spans the first w/h * 240 px of width over the lower 92% of the height.
    panel_w = int(240 * w / h)
    red = _colour_mask(pic, "#d62728")
    blue = _colour_mask(pic, "#1f77b4")
    half = panel_w // 2
    assert red[:, :half].sum() > 50 and not red[:, half:panel_w].any()
    assert blue[:, half:panel_w].sum() > 50 and not blue[:, :half].any()
    assert red[:, panel_w:].sum() > 20 and blue[:, panel_w:].sum() > 20   # the 3D view
    with pytest.raises(ValueError, match="pose2d must have shape"):
        animate.render_frame(frame, raw2d[:3], _pose(0))
