"""experiments.predict / hourglass_jax.inference end to end with a tiny random network.

References are independent of the code under test: a float64 NumPy soft-argmax of the network's
own volume and the closed-form crop, camera and depth-bin maps; `completion.complete` called
directly; frame counts from the generated inputs.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import imageio_ffmpeg
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

import completion
from experiments import predict as cli
from hourglass_jax import export, inference
from hourglass_jax.model import Detector2D, VolumetricHourglass, model_config
from hourglass_jax.skeleton import NUM_JOINTS, ROOT

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K = 3  # soft-argmax cube of the runs (experiments/configs/base.py)


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    """(export dir, module, variables) of a randomly initialised "test" VolumetricHourglass."""
    cfg = model_config("test")
    module = VolumetricHourglass(cfg)
    variables = jax.jit(lambda: module.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)),
                                            train=False))()
    path = export.save_model(tmp_path_factory.mktemp("ckpt") / "model", "volumetric", cfg,
                             variables)
    return path, module, variables


def _frames(n: int, h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _write_video(path: str, frames: np.ndarray, fps: float = 10.0) -> str:
    h, w = frames.shape[1:3]
    writer = imageio_ffmpeg.write_frames(path, (w, h), fps=fps, macro_block_size=1)
    with inference.quiet_fork():
        writer.send(None)
    for f in frames:
        writer.send(np.ascontiguousarray(f))
    writer.close()
    return path


def _softargmax_np(volume: np.ndarray, k: int) -> np.ndarray:
    """float64 reference: (J, D, h, w) -> (J, 3) x, y, z of the weighted mean over the k^3 cube
    about the argmax (negative values count 0, the cube clipped at the borders)."""
    r = k // 2
    out = np.zeros((volume.shape[0], 3))
    for j, vol in enumerate(np.asarray(volume, np.float64)):
        z0, y0, x0 = np.unravel_index(np.argmax(vol), vol.shape)
        acc, tot = np.zeros(3), 0.0
        for z in range(z0 - r, z0 + r + 1):
            for y in range(y0 - r, y0 + r + 1):
                for x in range(x0 - r, x0 + r + 1):
                    if 0 <= z < vol.shape[0] and 0 <= y < vol.shape[1] and 0 <= x < vol.shape[2]:
                        wgt = max(vol[z, y, x], 0.0)
                        acc += wgt * np.array([x, y, z])
                        tot += wgt
        out[j] = acc / tot if tot > 0 else (x0, y0, z0)
    return out


def test_image_matches_float64_reference(net, tmp_path):
    """A 32 x 32 image is exactly the default crop of the test network: the outputs equal the
    closed-form chain heatmap -> px (4 x + 1.5), depth bins -> mm, nominal camera
    back-projection."""
    path, module, variables = net
    frame = _frames(1, 32, 32, seed=3)[0]
    Image.fromarray(frame).save(tmp_path / "person.png")
    written = cli.run(path, str(tmp_path / "person.png"), str(tmp_path / "out"), softargmax_k=K,
                      root_depth_mm=5000.0)
    out = np.load(written["npz"])
    assert out["pose3d"].shape == (1, NUM_JOINTS, 3)
    assert out["pose2d"].shape == (1, NUM_JOINTS, 2)
    assert out["confidence"].shape == (1, NUM_JOINTS)
    assert np.all((out["confidence"] >= 0) & (out["confidence"] <= 1))

    vol = module.apply(variables, jnp.asarray(frame[None], jnp.float32) / 255.0,
                       train=False)["volume"]
    xyz = _softargmax_np(np.asarray(vol)[0], K)                 # (16, 3) x, y px; z bin
    uv = 4.0 * xyz[:, :2] + 1.5                                  # heatmap px -> crop = frame px
    bins = module.config.depth_bins
    dz = -1000.0 + (xyz[:, 2] + 0.5) * 2000.0 / bins             # bin -> mm, range +-1000 mm
    f = 16.0 / math.tan(math.radians(47.0) / 2)                  # W / 2 / tan(fov / 2)
    z = 5000.0 + dz
    xy = (uv - 15.5) / f * z[:, None]
    pose = np.concatenate([xy, z[:, None]], axis=1)
    np.testing.assert_allclose(out["pose2d"][0], uv, atol=1e-3)
    np.testing.assert_allclose(out["pose3d"][0], pose - pose[ROOT], atol=0.05)
    np.testing.assert_allclose(out["intrinsics"][0], [f, f, 15.5, 15.5], rtol=1e-12)

    doc = json.loads((tmp_path / "out" / "predictions.json").read_text())
    assert doc["joint_names"][ROOT] == "pelvis" and len(doc["frames"]) == 1
    np.testing.assert_allclose(doc["frames"][0]["pose3d"], out["pose3d"][0], atol=1e-3)


def test_folder_frames_and_boxes(net, tmp_path):
    """A folder of 3 images of different sizes: 3 frames in name order, each equal to running
    that image alone; boxes (JSON and CSV alike) give Newell crops and 2D inside the box."""
    path = net[0]
    folder = tmp_path / "imgs"
    folder.mkdir()
    sizes = [(40, 56), (64, 48), (36, 36)]
    for i, (h, w) in enumerate(sizes):
        Image.fromarray(_frames(1, h, w, seed=10 + i)[0]).save(folder / f"img_{2 - i}.png")
    (folder / "notes.txt").write_text("ignored")
    written = cli.run(path, str(folder), str(tmp_path / "o1"), softargmax_k=K, gif=True)
    out = np.load(written["npz"])
    with Image.open(written["gif"]) as gif:          # frames of 3 sizes in one animation
        assert gif.n_frames == 3
    assert out["pose3d"].shape == (3, NUM_JOINTS, 3)
    assert list(out["names"]) == ["img_0.png", "img_1.png", "img_2.png"]
    np.testing.assert_array_equal(out["frame_size"], [[36, 36], [48, 64], [56, 40]])
    np.testing.assert_allclose(out["pose3d"][:, ROOT], 0.0, atol=1e-9)
    single = np.load(cli.run(path, str(folder / "img_1.png"), str(tmp_path / "o2"),
                             softargmax_k=K)["npz"])
    np.testing.assert_allclose(single["pose3d"][0], out["pose3d"][1], atol=1e-3)
    # Default crop: the centred square of side max(H, W); default pelvis depth: the box spans
    # 2200 mm there (Z = f * 2200 / side, f from the 47 degree field of view).
    for i, (w, h) in enumerate(out["frame_size"]):
        np.testing.assert_allclose(out["center"][i], [(w - 1) / 2, (h - 1) / 2])
        np.testing.assert_allclose(out["scale"][i], max(w, h) / 200.0)
        f = w / 2 / math.tan(math.radians(47.0) / 2)
        np.testing.assert_allclose(out["root_depth"][i], f * 2200.0 / max(w, h), rtol=1e-12)

    boxes = [[4, 6, 24, 30], [10, 2, 30, 42], [0, 0, 36, 36]]  # x0, y0, x1, y1
    (tmp_path / "b.json").write_text(json.dumps({"boxes": boxes}))
    (tmp_path / "b.csv").write_text("x0,y0,x1,y1\n" + "\n".join(",".join(map(str, b))
                                                                for b in boxes))
    a = np.load(cli.run(path, str(folder), str(tmp_path / "o3"), str(tmp_path / "b.json"),
                        softargmax_k=K)["npz"])
    b = np.load(cli.run(path, str(folder), str(tmp_path / "o4"), str(tmp_path / "b.csv"),
                        softargmax_k=K)["npz"])
    np.testing.assert_allclose(a["pose2d"], b["pose2d"])
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        side = max(x1 - x0, y1 - y0)
        cx, cy = (x0 + x1) / 2 - 0.5, (y0 + y1) / 2 - 0.5    # box edges -> pixel centres
        np.testing.assert_allclose(a["center"][i], [cx, cy])
        np.testing.assert_allclose(a["scale"][i], side / 200.0)
        assert np.all(np.abs(a["pose2d"][i] - [cx, cy]) <= side / 2 + 1e-6)


def test_video_complete_and_pictures(net, tmp_path):
    """A 6-frame generated video: 6 frames out; --complete equals completion.complete on the
    written predictions; GIF, MP4 and PNGs have 6 frames; the viewer holds both sequences."""
    path = net[0]
    video = _write_video(str(tmp_path / "clip.mp4"), _frames(6, 48, 64, seed=5))
    tau = 0.03  # the random network's confidences spread around this (checked below)
    written = cli.run(path, video, str(tmp_path / "out"), complete=True, tau=tau, gif=True,
                      mp4=True, png=True, html=True, softargmax_k=K)
    out = np.load(written["npz"])
    assert out["pose3d"].shape == (6, NUM_JOINTS, 3)
    assert out["pose3d_completed"].shape == (6, NUM_JOINTS, 3)
    assert out["pose2d_completed"].shape == (6, NUM_JOINTS, 2)
    observed = out["confidence"] > tau
    assert 0 < observed.mean() < 1, "tau must split the joints for the check to mean anything"
    np.testing.assert_array_equal(out["observed"], observed)
    ref = completion.complete(out["pose3d"].astype(np.float32), observed)
    np.testing.assert_allclose(out["pose3d_completed"], np.asarray(ref.X), atol=1e-3)
    # Held joints keep their prediction; others moved.
    np.testing.assert_allclose(out["pose3d_completed"][observed], out["pose3d"][observed],
                               atol=1e-3)
    assert np.abs(out["pose3d_completed"] - out["pose3d"])[~observed].max() > 1.0

    with Image.open(written["gif"]) as gif:
        assert gif.n_frames == 6
    assert imageio_ffmpeg.count_frames_and_secs(written["mp4"])[0] == 6
    assert len(os.listdir(written["png"])) == 6
    page = open(written["html"], encoding="utf-8").read()
    assert "http://" not in page and "https://" not in page  # no network access
    assert page.count('"frame_00000') == 6                  # names of the 6 frames


def test_bad_input(net, tmp_path):
    path = net[0]
    img = tmp_path / "ok.png"
    Image.fromarray(_frames(1, 32, 32)[0]).save(img)
    with pytest.raises(ValueError, match="does not exist"):
        cli.run(path, str(tmp_path / "missing.png"), str(tmp_path / "o"))
    (tmp_path / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match="cannot read image .*broken.png"):
        cli.run(path, str(tmp_path / "broken.png"), str(tmp_path / "o"))
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="cannot decode video .*broken.mp4"):
        cli.run(path, str(tmp_path / "broken.mp4"), str(tmp_path / "o"))
    empty = imageio_ffmpeg.write_frames(str(tmp_path / "empty.mp4"), (32, 32), macro_block_size=1)
    with inference.quiet_fork():
        empty.send(None)
    empty.close()  # a container with no frames
    with pytest.raises(ValueError, match="no decodable frames|has no frames"):
        cli.run(path, str(tmp_path / "empty.mp4"), str(tmp_path / "o"))
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ValueError, match="holds no images"):
        cli.run(path, str(tmp_path / "empty_dir"), str(tmp_path / "o"))
    (tmp_path / "boxes.json").write_text(json.dumps([[0, 0, 10, 10], [0, 0, 10, 10]]))
    with pytest.raises(ValueError, match="2 boxes but the input has 1 frames"):
        cli.run(path, str(img), str(tmp_path / "o"), boxes=str(tmp_path / "boxes.json"))
    (tmp_path / "flat.json").write_text(json.dumps([[5, 0, 5, 10]]))
    with pytest.raises(ValueError, match="x1 <= x0"):
        cli.run(path, str(img), str(tmp_path / "o"), boxes=str(tmp_path / "flat.json"))
    with pytest.raises(ValueError, match="checkpoint .* does not exist"):
        cli.run(str(tmp_path / "nowhere"), str(img), str(tmp_path / "o"))
    with pytest.raises(ValueError, match="neither an exported model"):
        cli.run(str(tmp_path / "empty_dir"), str(img), str(tmp_path / "o"))
    cfg = model_config("test")
    det = jax.jit(lambda: Detector2D(cfg).init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)),
                                               train=False))()
    export.save_model(tmp_path / "det", "detector2d", cfg, det)
    with pytest.raises(ValueError, match="'detector2d' network; prediction needs a 'volumetric'"):
        cli.run(str(tmp_path / "det"), str(img), str(tmp_path / "o"))
    with pytest.raises(ValueError, match="at least 2 frames"):
        cli.run(path, str(img), str(tmp_path / "o"), complete=True, tau=0.0)


def test_workdir_resolution(net, tmp_path):
    """A workdir resolves to finetune/bone/model when present, else train3d/model."""
    src = net[0]
    work = tmp_path / "work"
    os.makedirs(work / "train3d")
    os.symlink(src, work / "train3d" / "model")
    got, note = inference.resolve_checkpoint(work)
    assert got == str(work / "train3d" / "model") and "train3d" in note
    os.makedirs(work / "finetune" / "bone")
    os.symlink(src, work / "finetune" / "bone" / "model")
    got, note = inference.resolve_checkpoint(work)
    assert got == str(work / "finetune" / "bone" / "model") and "bone" in note


def test_cli_command_line(net, tmp_path):
    """The command as a user types it: flags parsed, outputs written, the choice printed."""
    Image.fromarray(_frames(1, 40, 30)[0]).save(tmp_path / "p.jpg")
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.predict", f"--checkpoint={net[0]}",
         f"--input={tmp_path / 'p.jpg'}", f"--output={tmp_path / 'o'}", "--html",
         "--root_depth_mm=4000"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "using the exported network" in proc.stdout
    out = np.load(tmp_path / "o" / "predictions.npz")
    assert out["pose3d"].shape == (1, NUM_JOINTS, 3)
    np.testing.assert_allclose(out["root_depth"], [4000.0])
    assert (tmp_path / "o" / "viewer.html").exists()
    assert not (tmp_path / "o" / "predictions.gif").exists()


def test_cli_reports_errors(tmp_path):
    """The command line prints a one-line error and exits 1 (no traceback) on bad input."""
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.predict", f"--checkpoint={tmp_path}",
         f"--input={tmp_path / 'nope.mp4'}", f"--output={tmp_path / 'o'}"],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "predict: error: input" in proc.stderr and "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
