"""grain pipelines and the paper's augmentation on the `tiny` embedded dataset."""
import concurrent.futures

import numpy as np
import pytest

from hourglass_jax import geometry
from hourglass_jax.data import augment, mocap_render as mr, pipeline as pl, render, subjects
from hourglass_jax.skeleton import FLIP_PERMUTATION, ROOT, bone_lengths

RES = 32  # tiny config


@pytest.fixture(scope="session")
def tiny():
    return mr.load("tiny", mr.cached_data_dir("tiny"), build=False)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _closed_form_pose2d(s):
    """Crop px of the 3D pose through the sample's camera and crop box (float64, by hand)."""
    p = np.asarray(s["pose3d"], np.float64)
    fx, fy, cx, cy = np.asarray(s["intrinsics"], np.float64)
    u, v = fx * p[:, 0] / p[:, 2] + cx, fy * p[:, 1] / p[:, 2] + cy
    res = s["image"].shape[0]
    k = res / (200.0 * float(s["scale"]))
    return np.stack([k * (u - s["center"][0]), k * (v - s["center"][1])], -1) + (res - 1) / 2


def test_same_seed_same_batches_and_resume(tiny):
    a = pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=7)
    b = pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=7)
    c = pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=8)
    for step in (0, 3, 50):  # 50 is past the first epoch (45 steps)
        assert _same(a.batch_at(step), b.batch_at(step))
    assert not np.array_equal(a.batch_at(0)["index"], c.batch_at(0)["index"])
    it = a.iterator(start_step=4, num_threads=2)  # a resumed run, read by threads
    for step in (4, 5, 6):
        assert _same(next(it), a.batch_at(step))


def test_batch_layout_and_epochs(tiny):
    p = pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=1)
    b = p.batch_at(0)
    assert b["image"].shape == (8, RES, RES, 3) and b["image"].dtype == np.float32
    assert 0.0 <= b["image"].min() and b["image"].max() <= 1.0
    assert b["pose2d"].shape == (8, 16, 2) and b["pose3d"].shape == (8, 16, 3)
    assert b["visible"].shape == (8, 16) and b["visible"].dtype == bool
    assert b["intrinsics"].shape == (8, 4) and b["center"].shape == (8, 2)
    assert b["scale"].shape == b["root_depth"].shape == (8,)
    np.testing.assert_allclose(b["pose3d_rel"], b["pose3d"] - b["pose3d"][:, ROOT:ROOT + 1])
    assert b["subject"].dtype.kind == "U"
    # One epoch visits each record at most once; the next epoch has another order.
    n = p.steps_per_epoch
    ep0 = np.concatenate([p.batch_at(s)["index"] for s in range(n)])
    ep1 = np.concatenate([p.batch_at(s)["index"] for s in range(n, 2 * n)])
    assert len(set(ep0.tolist())) == len(ep0) == n * 8
    assert not np.array_equal(ep0, ep1)


def test_process_shards_partition_the_global_batch(tiny):
    """Process p of P gets rows p, p + P, ... of the single-process global batch, bit for bit
    (augmentation included)."""
    single = pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=3, process_index=0,
                              process_count=1)
    shards = [pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=3, process_index=p,
                               process_count=2) for p in range(2)]
    for step in (0, 9):
        g = single.batch_at(step)
        for p, sh in enumerate(shards):
            local = sh.batch_at(step)
            assert local["image"].shape[0] == 4
            assert _same(local, {k: v[p::2] for k, v in g.items()})
    with pytest.raises(ValueError, match="multiple of the process count"):
        pl.TrainPipeline(tiny["train"], global_batch_size=7, seed=0, process_index=0,
                         process_count=2)


def test_filters_and_bad_names(tiny):
    p = pl.TrainPipeline(tiny["train"], global_batch_size=4, seed=0, subjects=["S1", "S6"],
                         actions=["walk"])
    for s in range(p.steps_per_epoch):
        b = p.batch_at(s)
        assert set(b["subject"]) <= {"S1", "S6"} and set(b["action"]) == {"walk"}
    assert len(p.indices) == 2 * 1 * 2 * 4 * 3  # subjects x actions x subactions x cams x frames
    with pytest.raises(ValueError, match="unknown subject.*valid.*S1, S5"):
        pl.TrainPipeline(tiny["train"], global_batch_size=4, seed=0, subjects=["S2"])
    with pytest.raises(ValueError, match="unknown action.*valid.*walk"):
        pl.TrainPipeline(tiny["train"], global_batch_size=4, seed=0, actions=["swim"])
    with pytest.raises(ValueError, match="no records in this split"):
        pl.TrainPipeline(tiny["train"], global_batch_size=4, seed=0, subjects=["S9"])


def test_sequences_come_whole_and_in_frame_order(tiny):
    seqs = list(pl.read_sequences(tiny["validation"], subjects=["S11"]))
    assert len(seqs) == len(mr.CONFIGS[2].actions) * 2 * 4
    for seq, v in seqs:
        np.testing.assert_array_equal(v["frame"], np.arange(3))
        assert set(v["sequence"]) == {seq} and set(v["subject"]) == {"S11"}
        rec = tiny["validation"][int(v["index"][1])]
        np.testing.assert_array_equal(v["image"][1], rec["image"] / np.float32(255))
    rows = [b for b in pl.eval_batches(tiny["validation"], 10)]
    idx = np.concatenate([b["index"][b["mask"]] for b in rows])
    np.testing.assert_array_equal(np.sort(idx), np.arange(len(tiny["validation"])))
    assert rows[-1]["mask"].sum() == len(tiny["validation"]) % 10 or rows[-1]["mask"].all()


def _sample(tiny, i=0):
    return pl.decode(tiny["train"][i], i)


def test_flip_twice_is_identity(tiny):
    for i in (0, 17, 101):
        s = _sample(tiny, i)
        f = augment.flip(s)
        assert not np.array_equal(f["image"], s["image"])
        np.testing.assert_array_equal(f["visible"], s["visible"][FLIP_PERMUTATION])
        ff = augment.flip(f)
        assert ff.keys() == s.keys()
        for k in s:
            if s[k].dtype.kind == "f":  # cx goes through 2 * center_x - cx twice: float round-off
                np.testing.assert_allclose(ff[k], s[k], rtol=1e-6, atol=1e-4, err_msg=k)
            else:
                np.testing.assert_array_equal(ff[k], s[k], err_msg=k)


def test_augmented_targets_stay_a_consistent_pinhole_view(tiny):
    """After flip/rotation/scale: projecting pose3d with the new intrinsics into the new crop
    gives pose2d; bones, depths and the root depth are unchanged; the flip mirrors x."""
    rng = np.random.default_rng(0)
    for i in range(0, 300, 23):
        s = _sample(tiny, i)
        a = augment.random_augment(s, rng)
        np.testing.assert_allclose(_closed_form_pose2d(a), a["pose2d"], atol=2e-3)
        np.testing.assert_allclose(bone_lengths(a["pose3d"]), bone_lengths(s["pose3d"]),
                                   rtol=1e-5)
        z = s["pose3d"][:, 2]
        np.testing.assert_allclose(a["pose3d"][:, 2], z[FLIP_PERMUTATION] if a["flipped"] else z,
                                   rtol=1e-6)
        assert a["root_depth"] == s["root_depth"]
        assert a["scale"] == pytest.approx(s["scale"] * a["scale_factor"], rel=1e-6)
        # Rotation of the 2D target about the crop centre by the drawn angle (by hand).
        c0 = (RES - 1) / 2
        p = np.asarray(s["pose2d"], np.float64)
        if a["flipped"]:
            p = np.stack([(RES - 1) - p[:, 0], p[:, 1]], -1)[FLIP_PERMUTATION]
        th = np.deg2rad(float(a["rotation"]))
        rot = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]])
        expect = (p - c0) @ rot.T / float(a["scale_factor"]) + c0
        np.testing.assert_allclose(a["pose2d"], expect, atol=2e-3)


def _part_masks_sample(res=64):
    """A rendered person whose image channels are the masks of three body parts, with targets
    computed by hand (no dataset code)."""
    pose = subjects.sequence_motion("S6", "punch", 1, 10.0)[4]
    cam = pose[ROOT] + np.array([3500.0, 400.0, 2000.0])
    r, t = geometry.look_at_camera(cam, pose[ROOT], np.array([0.0, 1, 0]))
    joints = (pose @ r.T + t).astype(np.float64)
    k = np.array([1145.0, 1145.0, 500.0, 500.0])
    uv = joints[:, :2] / joints[:, 2:] * k[:2] + k[2:]
    center = 0.5 * (uv.min(0) + uv.max(0))
    scale = 1.3 * np.max(uv.max(0) - uv.min(0)) / 200.0
    sc = res / (200 * scale)
    kc = np.array([sc * k[0], sc * k[1], *(sc * (k[2:] - center) + (res - 1) / 2)])
    radii, colors, hair = subjects.appearance_arrays("S6")
    f = lambda x: np.asarray(x, np.float32)[None]  # noqa: E731
    out = render.render_batch(
        joints[None], kc[None], render.Appearance(f(radii), f(colors), f(hair)),
        render.Scene(f(r), f(t), f([0, -0.6, -0.8]), f(np.full(render.BG_PARAMS, 0.5))),
        render.Occluders(np.zeros((1, 1, 2, 3), np.float32), np.zeros((1, 1), np.float32),
                         np.zeros((1, 1, 3), np.float32)), res)
    part = np.asarray(out.part[0])
    parts = ("r_forearm", "l_thigh", "r_upper_arm")
    image = np.stack([part == render.PART_INDEX[n] for n in parts], -1).astype(np.float32)
    sample = {"image": image, "pose3d": joints.astype(np.float32),
              "pose2d": (sc * (uv - center) + (res - 1) / 2).astype(np.float32),
              "visible": np.ones(16, bool), "intrinsics": k.astype(np.float32),
              "center": center.astype(np.float32), "scale": np.float32(scale)}
    return sample, parts


def _centroid(mask):
    v, u = np.mgrid[0:mask.shape[0], 0:mask.shape[1]]
    w = mask.sum()
    return np.array([(u * mask).sum() / w, (v * mask).sum() / w])


@pytest.mark.parametrize("flip,rot,scale", [(False, 25.0, 1.2), (True, -30.0, 1.1),
                                            (True, 10.0, 0.9), (False, 0.0, 1.25)])
def test_rendered_limbs_move_with_their_joints(flip, rot, scale):
    """Each uniquely labelled limb's pixels move by the same crop map as its joints' 2D
    targets (mirrored, with left/right labels swapped, on flip). The map is written by hand."""
    s, parts = _part_masks_sample()
    a = augment.flip(s) if flip else dict(s)
    a = augment.rotate_scale(a, rot, scale)
    th = np.deg2rad(rot)
    lin = np.array([[np.cos(th), np.sin(th)], [-np.sin(th), np.cos(th)]]) / scale
    c0 = (64 - 1) / 2

    def crop_map(p):
        p = np.array(p, np.float64)
        if flip:
            p[..., 0] = (64 - 1) - p[..., 0]
        return (p - c0) @ lin.T + c0

    for ch, name in enumerate(parts):
        ja, jb = next(p for p in render.BODY_PARTS if p[0] == name)[1:3]
        mask0, mask1 = s["image"][..., ch], a["image"][..., ch]
        assert mask0.sum() > 10, name
        mid0 = 0.5 * (s["pose2d"][ja] + s["pose2d"][jb])
        assert np.linalg.norm(_centroid(mask0) - mid0) < 3.0, name  # limb drawn at its joints
        np.testing.assert_allclose(_centroid(mask1), crop_map(_centroid(mask0)), atol=0.35,
                                   err_msg=name)
        fa, fb = (FLIP_PERMUTATION[ja], FLIP_PERMUTATION[jb]) if flip else (ja, jb)
        mid1 = 0.5 * (a["pose2d"][fa] + a["pose2d"][fb])
        np.testing.assert_allclose(mid1, crop_map(mid0), atol=1e-3, err_msg=name)
        # Area scales by 1 / scale^2 (nothing left the crop).
        assert abs(mask1.sum() * scale**2 - mask0.sum()) < 0.1 * mask0.sum(), name


def test_warp_image_is_bilinear_sampling_at_the_mapped_points():
    """Pillow's warp equals float64 bilinear interpolation at out_to_in @ (u, v, 1) (pixel
    centres at integers), for uint8 RGB and float images, away from the border."""
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (32, 32, 3)).astype(np.uint8)
    th = np.deg2rad(17.0)
    m = np.array([[0.9 * np.cos(th), 0.9 * np.sin(th), 2.3],
                  [-0.9 * np.sin(th), 0.9 * np.cos(th), 4.1]])
    v, u = np.mgrid[0:32, 0:32].astype(np.float64)
    x = m[0, 0] * u + m[0, 1] * v + m[0, 2]
    y = m[1, 0] * u + m[1, 1] * v + m[1, 2]
    ok = (x >= 0) & (x <= 30.99) & (y >= 0) & (y <= 30.99)
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    x0, y0 = np.clip(x0, 0, 30), np.clip(y0, 0, 30)
    wx, wy = (x - x0)[..., None], (y - y0)[..., None]
    f = img.astype(np.float64)
    ref = ((1 - wy) * ((1 - wx) * f[y0, x0] + wx * f[y0, x0 + 1])
           + wy * ((1 - wx) * f[y0 + 1, x0] + wx * f[y0 + 1, x0 + 1]))
    out8 = augment.warp_image(img, m)
    assert out8.dtype == np.uint8
    assert np.abs(out8[ok].astype(np.float64) - ref[ok]).max() <= 1.0
    outf = augment.warp_image(img.astype(np.float32) / 255, m)
    np.testing.assert_allclose(outf[ok], ref[ok] / 255, atol=1e-5)
    assert np.all(outf[(x < -1) | (y < -1) | (x > 32) | (y > 32)] == 0)  # outside: zero


def test_sequence_with_a_missing_frame_is_an_error(tiny):
    src = tiny["validation"]
    recs = [src[i] for i in range(len(src))]
    seq = recs[0]["sequence"]
    kept = [r for r in recs if not (r["sequence"] == seq and int(r["frame"]) == 1)]
    assert len(kept) == len(recs) - 1
    with pytest.raises(ValueError, match="frames are not 0..1"):
        list(pl.read_sequences(kept))
    # The same records, complete, read fine from a plain list.
    assert len(list(pl.read_sequences(recs))) == len(set(r["sequence"] for r in recs))


def test_nearly_square_pixels_rotate_within_the_stated_error(tiny):
    """Real cameras (H36M: fx, fy 0.1% apart) are accepted; the rotated 3D pose then projects
    onto the (exact) rotated 2D target to within |fx - fy| / f of its distance to the
    principal point; 1% apart is refused."""
    s = _sample(tiny, 5)
    k = np.asarray(s["intrinsics"], np.float64).copy()
    k[1] = k[0] * 1.001
    s["intrinsics"] = k.astype(np.float32)
    s["pose2d"] = _closed_form_pose2d(s).astype(np.float32)  # consistent with the new fy
    a = augment.rotate_scale(s, 30.0, 1.0)
    res = s["image"].shape[0]
    px_per_image_px = res / (200.0 * float(a["scale"]))
    p3 = np.asarray(a["pose3d"], np.float64)
    uv = p3[:, :2] / p3[:, 2:] * k[:2]  # offsets from the principal point, image px
    bound = 0.001 * np.linalg.norm(uv, axis=-1).max() * px_per_image_px + 2e-3
    err = np.linalg.norm(_closed_form_pose2d(a) - a["pose2d"], axis=-1)
    assert err.max() <= bound and bound < 0.5, (err.max(), bound)
    k[1] = k[0] * 1.01
    s["intrinsics"] = k.astype(np.float32)
    with pytest.raises(ValueError, match="square pixels"):
        augment.rotate_scale(s, 10.0, 1.0)


def test_other_datasets_are_checked_against_the_names_they_hold(tiny):
    recs = [tiny["validation"][i] for i in range(len(tiny["validation"]))]  # no vocabulary
    meta = pl.read_metadata(recs)
    assert meta.vocabulary is None
    with pytest.raises(ValueError, match="unknown action.*valid: jump, punch, walk"):
        pl.select(meta, actions=["swim"])
    with pytest.raises(ValueError, match="unknown subject.*valid: S11, S9"):
        pl.select(meta, subjects=["S1"])
    assert len(pl.select(meta, subjects=["S9"], actions=["walk"])) == 2 * 4 * 3


def test_lookahead_prepares_the_next_batches_without_changing_them(tiny):
    ahead = pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=2, lookahead=2)
    plain = pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=2, lookahead=0)
    try:
        for step in (0, 1, 2, 7, 3, 4):  # sequential, then a jump back (a resume)
            assert _same(ahead.batch_at(step), plain.batch_at(step))
            assert sorted(ahead._ahead) == [step + 1, step + 2]
        assert plain._ahead == {} and plain._pool is None
    finally:
        ahead.close()
    assert ahead._pool is None


def test_many_lookahead_workers_give_the_same_batches_in_order(tiny):
    """Four threads preparing eight batches at once (a many-core host) yield exactly the batches of
    the synchronous pipeline, in step order, also across a jump back; lookahead defaults to two
    batches per worker; fewer than one worker is refused."""
    many = pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=5, workers=4,
                            worker_kind="thread")
    plain = pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=5, lookahead=0)
    try:
        assert (many.workers, many.lookahead) == (4, 8)
        for step in (0, 1, 2, 3, 9, 10, 1):
            assert _same(many.batch_at(step), plain.batch_at(step))
            assert sorted(many._ahead) == list(range(step + 1, step + 9))
        assert many._pool._max_workers == 4
    finally:
        many.close()
    with pytest.raises(ValueError, match="workers must be >= 1"):
        pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=5, workers=0)
    assert 1 <= pl.default_workers() <= 16


def test_worker_processes_give_the_same_batches_as_the_synchronous_pipeline(tiny):
    """Two spawned worker processes (the default kind for several workers), with a relabelling
    closure that has to travel to them: the same batches in step order, also after a jump; an
    unknown kind is refused."""
    shift = np.float32(7.0)

    def relabel(sample):
        return {**sample, "pose3d": sample["pose3d"] + shift}

    kwargs = dict(global_batch_size=8, seed=3, relabel=relabel)
    procs = pl.TrainPipeline(tiny["train"], workers=2, lookahead=3, **kwargs)
    plain = pl.TrainPipeline(tiny["train"], lookahead=0, **kwargs)
    try:
        assert procs.worker_kind == "process"
        for step in (0, 1, 2, 3, 8, 9, 2):
            batch = procs.batch_at(step)
            assert batch["image"].dtype == np.float32
            assert _same(batch, plain.batch_at(step))
        assert isinstance(procs._pool, concurrent.futures.ProcessPoolExecutor)
        # What a worker sends through the pipe: uint8 images, a quarter of float32's bytes,
        # equal to the caller's batch times 255.
        sent = procs._ahead[3].result()
        assert sent["image"].dtype == np.uint8
        np.testing.assert_allclose(sent["image"] / 255.0, plain.batch_at(3)["image"], atol=1e-7)
    finally:
        procs.close()
    assert procs._pool is None
    with pytest.raises(ValueError, match="worker_kind must be one of"):
        pl.TrainPipeline(tiny["train"], global_batch_size=8, seed=3, worker_kind="fibre")


def test_pose_to_unaugmented_undoes_every_random_augmentation(tiny):
    """The augmented 3D target mapped back equals the original one, for flips and any rotation;
    a wrong inverse (no un-flip, or the rotation's sign) would miss by the pose's extent."""
    rng = np.random.default_rng(3)
    flips = 0
    for i in range(0, 300, 19):
        s = _sample(tiny, i)
        a = augment.random_augment(s, rng)
        flips += bool(a["flipped"])
        back = augment.pose_to_unaugmented(a["pose3d"], bool(a["flipped"]), float(a["rotation"]))
        np.testing.assert_allclose(back, s["pose3d"], atol=1e-2)
        root_relative = a["pose3d"] - a["pose3d"][ROOT]
        np.testing.assert_allclose(
            augment.pose_to_unaugmented(root_relative, bool(a["flipped"]), float(a["rotation"])),
            s["pose3d"] - s["pose3d"][ROOT], atol=1e-2)
    assert 0 < flips < 16  # both branches ran
    # Batched poses (N, 16, 3) map row by row.
    poses = np.stack([_sample(tiny, i)["pose3d"] for i in (0, 5)]).astype(np.float64)
    turned = augment.pose_to_unaugmented(poses, True, 25.0)
    np.testing.assert_allclose(turned[1], augment.pose_to_unaugmented(poses[1], True, 25.0))
    with pytest.raises(ValueError, match="pose3d must be"):
        augment.pose_to_unaugmented(poses[..., :2], False, 0.0)


def test_mixed_pipeline_joins_its_parts_batches(tiny):
    """Batch k of a MixedPipeline is part 0's batch k, then part 1's, whatever was asked
    before (resume); parts that yield other fields are a clear error."""
    walk = pl.TrainPipeline(tiny["train"], global_batch_size=6, seed=4, actions=["walk"])
    s1 = pl.TrainPipeline(tiny["train"], global_batch_size=2, seed=5, subjects=["S1"])
    mixed = pl.MixedPipeline([walk, s1])
    assert mixed.global_batch_size == mixed.local_batch_size == 8
    for step in (3, 0, 40):
        batch = mixed.batch_at(step)
        a, b = walk.batch_at(step), s1.batch_at(step)
        assert batch.keys() == a.keys()
        for key in a:
            np.testing.assert_array_equal(batch[key][:6], a[key])
            np.testing.assert_array_equal(batch[key][6:], b[key])
        assert set(batch["action"][:6]) == {"walk"} and set(batch["subject"][6:]) == {"S1"}

    def with_confidence(sample):
        return dict(sample, confidence=np.ones(16, np.float32))

    relabelled = pl.TrainPipeline(tiny["train"], global_batch_size=2, seed=5,
                                  relabel=with_confidence)
    with pytest.raises(ValueError, match=r"part 1 yields other fields.*\['confidence'\]"):
        pl.MixedPipeline([walk, relabelled]).batch_at(0)
    with pytest.raises(ValueError, match="at least 2 pipelines"):
        pl.MixedPipeline([walk])
    mixed.close()
