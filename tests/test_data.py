"""Training patches: listing, hold-out, batched crops, exact flips/rotations, MATLAB-bicubic LR."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from srgan.data import (
    CropPlan,
    ImageBank,
    PatchSampler,
    TrainingDataError,
    cut_crops,
    draw_crops,
    list_images,
    load_training_data,
    split_train_val,
    validation_crops,
)
from srgan.imresize import imresize


def _random_bank(sizes: list[tuple[int, int]], seed: int = 0) -> ImageBank:
    rng = np.random.default_rng(seed)
    return ImageBank.from_arrays([rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes])


def test_list_images_is_recursive_and_sorted(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    for name in ("a/b/z.png", "a/y.JPG", "x.jpeg", "notes.txt", "a/b/w.gif"):
        (tmp_path / name).write_bytes(b"")
    names = [p.relative_to(tmp_path).as_posix() for p in list_images(tmp_path)]
    assert names == ["a/b/z.png", "a/y.JPG", "x.jpeg"]
    with pytest.raises(TrainingDataError, match="does not exist"):
        list_images(tmp_path / "missing")


def test_split_holds_out_every_40th_file() -> None:
    paths = [Path(f"{i:03d}.png") for i in range(100)]
    train, val = split_train_val(paths)
    assert val == [paths[0], paths[40], paths[80]]
    assert len(train) == 97 and not set(train) & set(val)
    assert split_train_val(paths) == (train, val)  # deterministic
    with pytest.raises(TrainingDataError, match="at least 2"):
        split_train_val(paths[:1])


def test_crops_are_exact_flips_and_rotations() -> None:
    bank = _random_bank([(40, 50), (33, 61)])
    patch = 16
    for image, (t, v, h) in itertools.product(range(2), itertools.product([False, True], repeat=3)):
        plan = CropPlan(torch.tensor([image]), torch.tensor([5]), torch.tensor([7]),
                        torch.tensor([t]), torch.tensor([v]), torch.tensor([h]))
        got = cut_crops(bank, plan, patch=patch)[0]
        crop = bank.image(image)[:, 5 : 5 + patch, 7 : 7 + patch]
        expected = crop.flip(-2) if v else crop
        expected = expected.flip(-1) if h else expected
        expected = expected.transpose(-2, -1) if t else expected
        assert torch.equal(got, expected), (image, t, v, h)
    # The 8 flag combinations give the 8 distinct flips/90-degree rotations.
    crop = bank.image(0)[:, :patch, :patch]
    dihedral = [torch.rot90(c, k, dims=(-2, -1)) for c in (crop, crop.flip(-1)) for k in range(4)]
    outputs = []
    for t, v, h in itertools.product([False, True], repeat=3):
        plan = CropPlan(torch.tensor([0]), torch.tensor([0]), torch.tensor([0]),
                        torch.tensor([t]), torch.tensor([v]), torch.tensor([h]))
        outputs.append(cut_crops(bank, plan, patch=patch)[0])
    for d in dihedral:
        assert sum(torch.equal(d, o) for o in outputs) == 1


def test_batch_shapes_ranges_and_lr_is_matlab_bicubic() -> None:
    bank = _random_bank([(100, 120), (96, 96), (200, 97)])
    sampler = PatchSampler(bank, patch=48, seed=3)
    lr, hr = sampler.sample(8)
    assert lr.shape == (8, 3, 12, 12) and hr.shape == (8, 3, 48, 48)
    assert lr.dtype == hr.dtype == torch.float32
    assert -1 <= hr.min() and hr.max() <= 1 and 0 <= lr.min() and lr.max() <= 1
    # HR is exactly 8-bit; LR is MATLAB-bicubic of it, rounded to 8 bits.
    hr01 = (hr + 1) / 2
    torch.testing.assert_close(torch.round(hr01 * 255) / 255, hr01)
    expected = torch.round(imresize(hr01, scale=1 / 4).clamp(0, 1) * 255) / 255
    assert (lr - expected).abs().max() <= 1 / 255 + 1e-6  # float rounding ties only
    assert (lr == expected).float().mean() > 0.999


def test_sampler_is_seeded_and_restorable() -> None:
    bank = _random_bank([(64, 64), (80, 70)])
    a, b = PatchSampler(bank, patch=32, seed=1), PatchSampler(bank, patch=32, seed=1)
    assert torch.equal(a.sample(4)[1], b.sample(4)[1])
    other = PatchSampler(bank, patch=32, seed=2)
    assert not torch.equal(a.sample(4)[1], other.sample(4)[1])
    state = a.state_dict()
    first = a.sample(4)[1]
    a.load_state_dict(state)
    assert torch.equal(a.sample(4)[1], first)


def test_images_are_weighted_by_crop_positions() -> None:
    # Image 0 is too small for a 32 crop; image 2 has 3x3 positions, image 1 has 2x2.
    bank = _random_bank([(20, 20), (33, 33), (34, 34)])
    g = torch.Generator().manual_seed(0)
    picks = draw_crops(bank, 4000, patch=32, generator=g).image
    counts = torch.bincount(picks, minlength=3).tolist()
    assert counts[0] == 0
    assert 2.0 < counts[2] / counts[1] < 2.55  # 9 / 4
    plan = draw_crops(bank, 500, patch=32, generator=g)
    assert (plan.top + 32 <= bank.heights[plan.image]).all()
    assert (plan.left + 32 <= bank.widths[plan.image]).all()
    with pytest.raises(TrainingDataError, match="at least 64x64"):
        draw_crops(bank, 1, patch=64, generator=g)


def test_validation_crops_are_fixed(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (90 + i, 140, 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    Image.fromarray(rng.integers(0, 256, (90, 100), dtype=np.uint8)).save(tmp_path / "grey.png")
    train, val = load_training_data(tmp_path)
    assert len(train) == 3 and len(val) == 1
    lr1, hr1 = validation_crops(val, patch=64, per_image=3)
    lr2, hr2 = validation_crops(val, patch=64, per_image=3)
    assert hr1.shape == (3, 3, 64, 64) and lr1.shape == (3, 3, 16, 16)
    assert torch.equal(hr1, hr2) and torch.equal(lr1, lr2)
    # Larger than the smallest image: shrinks to fit, a multiple of 4.
    _, hr = validation_crops(train, patch=500)
    assert hr.shape[-1] == 88


def test_real_training_folder(train_data: Path) -> None:
    train, val = load_training_data(train_data, max_images=41)
    assert len(train) == 39 and len(val) == 2
    lr, hr = PatchSampler(train, seed=0).sample(16)
    assert lr.shape == (16, 3, 24, 24) and hr.shape == (16, 3, 96, 96)
    assert hr.std() > 0.05  # real photo content, not blank
