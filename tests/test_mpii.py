"""mpii builder on the real validation annotations (Newell's valid.h5, 2,958 people) with
generated images of the right size; bad input."""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest
from PIL import Image

import helpers_realdata as hr
from hourglass_jax.data import mpii, realdata

ANNOT = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data",
                                      "mpii_valid_annot.h5"))
needs_annot = pytest.mark.skipif(not os.path.exists(ANNOT),
                                 reason=f"real MPII validation annotations not found at {ANNOT}")
RES = 64
N_VALID, N_TRAIN = 120, 40  # people of the real file used by the fast build test


def _half(scale: float) -> int:
    return max(3, int(round(12 * scale)))  # marker ~6 crop px whatever the person's size


def _write_manual_dir(root, rows_by_split: dict[str, np.ndarray]) -> None:
    """annot/{train,valid}.h5 holding the given rows of the real file; generated images."""
    os.makedirs(os.path.join(root, "annot"), exist_ok=True)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    with h5py.File(ANNOT, "r") as src:
        real = {k: src[k][()] for k in src}
    people_of: dict[str, list[int]] = {}
    for split, rows in rows_by_split.items():
        with h5py.File(os.path.join(root, "annot", mpii.SPLIT_FILES[split]), "w") as f:
            for k, v in real.items():
                f[k] = v[rows]
        for i in rows:
            people_of.setdefault(real["imgname"][i].decode(), []).append(int(i))
    for name, people in people_of.items():
        parts = real["part"][people]
        # "The right size": at least a 1280 x 720 photo, larger where annotations (and their
        # markers) reach further.
        pad = max(_half(real["scale"][i]) for i in people) + 1
        w = max(1280, int(parts[..., 0].max()) + pad)
        h = max(720, int(parts[..., 1].max()) + pad)
        img = np.empty((h, w, 3), np.uint8)
        img[:] = hr.BACKGROUND
        for i in people:
            hr.draw_markers(img, real["part"][i], _half(real["scale"][i]),
                            mask=real["part"][i][:, 0] > 0)
        Image.fromarray(img).save(os.path.join(root, "images", name))


@needs_annot
def test_real_annotations_counts_and_joint_order():
    a = mpii.read_annotations(ANNOT)
    assert len(a) == 2958 and a.part.shape == (2958, 16, 2)
    # MPII-16 order, checked on the real labels: in image y (down) a typical person has
    # head top < upper neck < thorax < pelvis < knees < ankles.
    y = np.where(a.annotated, a.part[..., 1], np.nan)
    med = np.nanmedian(y, axis=0)
    assert med[9] < med[8] < med[7] < med[6] < med[1] < med[0]
    assert med[6] < med[4] < med[5]
    # Pelvis (6) lies midway between the hips (2, 3), thorax (7) between the shoulders (12, 13).
    for centre, left, right, tol in ((6, 2, 3, 0.1), (7, 12, 13, 0.3)):
        ok = a.annotated[:, [centre, left, right]].all(1)
        mid = 0.5 * (a.part[ok, left] + a.part[ok, right])
        size = np.linalg.norm(a.part[ok, left] - a.part[ok, right], axis=-1)
        ratio = np.linalg.norm(a.part[ok, centre] - mid, axis=-1)[size > 0] / size[size > 0]
        assert np.median(ratio) < tol, (centre, np.median(ratio))
    # Unannotated joints are stored at (0, 0): 3,088 of the 47,328, plus one joint labelled at
    # x = 0 on the image border (x > 0 is the rule Newell's code uses, so it is dropped too).
    assert int((~a.annotated).sum()) == 3089
    assert int((a.part[~a.annotated] == 0).all(-1).sum()) == 3088


@needs_annot
def test_builder_on_real_annotations_with_generated_images(tmp_path):
    manual = tmp_path / "mpii"
    _write_manual_dir(str(manual), {"validation": np.arange(N_VALID),
                                    "train": np.arange(N_VALID, N_VALID + N_TRAIN)})
    cfg = realdata.RealConfig(name="fixture", res=RES)
    b = mpii.prepare(manual, cfg, tmp_path / "tfds")
    assert b.info.splits["validation"].num_examples == N_VALID
    assert b.info.splits["train"].num_examples == N_TRAIN
    with h5py.File(ANNOT, "r") as f:
        part, center, scale = f["part"][:N_VALID], f["center"][:N_VALID], f["scale"][:N_VALID]
        names = [x.decode() for x in f["imgname"][:N_VALID]]
    src = b.as_data_source()["validation"]
    checked = 0
    for k in range(len(src)):
        r = src[k]
        i = int(r["subaction"])  # the person's row in the file
        assert (r["sequence"].decode() if isinstance(r["sequence"], bytes) else r["sequence"]) \
            == f"{os.path.splitext(names[i])[0]}/{i}"
        # Newell's training crop, by hand: centre 15 s px lower, box 1.25 * 200 * s px.
        c = center[i] + [0.0, 15.0 * scale[i]]
        s = 1.25 * scale[i]
        np.testing.assert_allclose(r["center"], c, rtol=1e-6)
        np.testing.assert_allclose(r["scale"], s, rtol=1e-6)
        want = (part[i] - c) * RES / (200.0 * s) + (RES - 1) / 2
        np.testing.assert_allclose(r["pose2d"], want, atol=2e-3)
        np.testing.assert_array_equal(r["visible"], part[i][:, 0] > 0)
        assert not bool(r["has_pose3d"]) and not np.any(r["pose3d"]) and not np.any(r["intrinsics"])
        # Markers of this person that no other marker of the image crowds show at pose2d.
        others = [j for j in range(N_VALID) if names[j] == names[i]]
        for joint in hr.MARKERS:
            # Skip unannotated joints and markers cut by the image's top/left border.
            if part[i][joint, 0] <= 0 or min(part[i][joint]) < _half(scale[i]):
                continue
            pts = np.concatenate([part[o][list(hr.MARKERS)] for o in others])
            near = np.linalg.norm(pts - part[i][joint], axis=-1) < 3 * _half(max(scale[others]))
            if near.sum() == 1:
                assert hr.marker_at(r["image"], r["pose2d"][joint], joint), (i, joint)
                checked += 1
    assert checked > N_VALID  # most people have two or three clear markers


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(realdata.LayoutError, match=r"expected a file at .*annot/valid\.h5"):
        mpii.read_annotations(tmp_path / "annot" / "valid.h5")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["imgname"] = np.array([b"a.jpg"])
        f["center"], f["scale"] = np.zeros((1, 2)), np.ones(1)
        f["part"] = np.zeros((1, 14, 2))  # LSP-style 14 joints, not MPII-16
    with pytest.raises(realdata.LayoutError,
                       match=r"part has shape \(1, 14, 2\), expected \(1, 16, 2\)"):
        mpii.read_annotations(bad)
    with h5py.File(bad, "a") as f:
        del f["center"]
    with pytest.raises(realdata.LayoutError, match=r"missing datasets \['center'\]"):
        mpii.read_annotations(bad)
    (tmp_path / "notes.h5").write_text("not hdf5")
    with pytest.raises(realdata.LayoutError, match="not an HDF5 file"):
        mpii.read_annotations(tmp_path / "notes.h5")


@needs_annot
def test_missing_image_names_the_file(tmp_path):
    _write_manual_dir(str(tmp_path), {"validation": np.arange(3), "train": np.arange(3, 4)})
    with h5py.File(ANNOT, "r") as f:
        name = f["imgname"][1].decode()
    os.remove(tmp_path / "images" / name)
    with pytest.raises(realdata.LayoutError, match=rf"MPII image .*images/{name}"):
        list(mpii.examples(str(tmp_path), "validation", RES))


@needs_annot
def test_prepare_command(tmp_path, capsys):
    from hourglass_jax.data import prepare
    _write_manual_dir(str(tmp_path / "m"), {"validation": np.arange(3), "train": np.arange(3, 5)})
    prepare.main(["mpii", "--manual_dir", str(tmp_path / "m"), "--data_dir", str(tmp_path / "t")])
    out = capsys.readouterr().out
    assert "mpii/small prepared in" in out and "'validation': 3" in out and "'train': 2" in out
    realdata.require_prepared("mpii", tmp_path / "t", "small")
    # The 2D set feeds the training pipeline with the paper's augmentation (zero intrinsics).
    from hourglass_jax.data import pipeline
    src = mpii.builder("small", tmp_path / "t").as_data_source()["train"]
    batch = pipeline.TrainPipeline(src, global_batch_size=2, seed=0, process_index=0,
                                   process_count=1).batch_at(0)
    assert batch["image"].shape == (2, 64, 64, 3) and batch["pose2d"].shape == (2, 16, 2)


@pytest.mark.slow
@needs_annot
def test_full_validation_build(tmp_path):
    """All 2,958 people of the real file built (about a minute on 2 cores)."""
    n = 2958
    _write_manual_dir(str(tmp_path / "m"), {"validation": np.arange(n), "train": np.arange(2)})
    b = mpii.prepare(tmp_path / "m", realdata.RealConfig(name="fixture", res=RES), tmp_path / "t")
    assert b.info.splits["validation"].num_examples == n
    src = b.as_data_source()["validation"]
    assert len({int(src[k]["subaction"]) for k in range(n)}) == n
