"""The rating protocol as pure functions: assignment, order, duplicates, calibration."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from survey.study import protocol


def make_stimuli(n_images: int, methods: list[str]) -> list[protocol.StimulusKey]:
    keys, next_id = [], 1
    for image_id in range(1, n_images + 1):
        for method in methods:
            keys.append((next_id, image_id, method))
            next_id += 1
    return keys


METHODS = ["nearest", "bicubic", "srresnet", "srgan", "hr"]


def rated_part(plan: list[protocol.PlannedItem]) -> list[protocol.PlannedItem]:
    return [p for p in plan if not p.is_calibration]


def test_full_plan_covers_every_stimulus_once_plus_hidden_repeats():
    stimuli = make_stimuli(6, METHODS)
    plan = protocol.plan_session(stimuli, slot=0, seed=1, per_rater=None, repeats=3, calibration_images=2)
    rated = rated_part(plan)
    firsts = [p.stimulus_id for p in rated if not p.is_repeat]
    assert sorted(firsts) == sorted(k[0] for k in stimuli)
    repeats = [p for p in rated if p.is_repeat]
    assert len(repeats) == 3
    assert {p.stimulus_id for p in repeats} <= set(firsts)


@pytest.mark.parametrize("seed", range(40))
def test_order_never_shows_the_same_image_twice_in_a_row(seed):
    rng = random.Random(seed)
    n_images = rng.randint(2, 8)
    methods = METHODS[: rng.randint(1, 5)]
    stimuli = make_stimuli(n_images, methods)
    per_rater = rng.choice([None, max(1, len(stimuli) // 2)])
    plan = protocol.plan_session(stimuli, slot=rng.randint(0, 5), seed=seed, per_rater=per_rater, repeats=2,
                                 calibration_images=1)
    rated = rated_part(plan)
    images = [p.image_id for p in rated]
    if max(Counter(images).values()) <= (len(images) + 1) // 2:  # an order without neighbours exists
        assert not protocol.same_image_adjacent(images), images
    # Duplicates come after their original and never next to it.
    for index, item in enumerate(rated):
        if item.is_repeat:
            original = next(i for i, p in enumerate(rated) if p.stimulus_id == item.stimulus_id and not p.is_repeat)
            assert index - original >= 2


def calibration_stimuli(n_images: int, first_id: int = 1000) -> list[protocol.StimulusKey]:
    """Stimuli of calibration-only images (ids apart from make_stimuli's)."""
    return [(first_id + k[0], first_id + k[1], k[2]) for k in make_stimuli(n_images, ["nearest", "hr"])]


def test_calibration_examples_are_never_rated_images():
    stimuli, calibration = make_stimuli(4, METHODS), calibration_stimuli(3)
    for seed in range(30):
        plan = protocol.plan_session(stimuli, calibration_stimuli=calibration, slot=0, seed=seed, per_rater=None,
                                     repeats=2, calibration_images=2)
        shown = {p.image_id for p in plan if p.is_calibration}
        rated = {p.image_id for p in plan if not p.is_calibration}
        assert len(shown) == 2 and shown <= {k[1] for k in calibration} and not shown & rated
    # A calibration image among the rated ones is a programming error, not a plan.
    with pytest.raises(ValueError, match="calibration image"):
        protocol.plan_session(stimuli, calibration_stimuli=stimuli[:2], slot=0, seed=1, per_rater=None, repeats=0,
                              calibration_images=1)


def test_single_image_study_still_gets_a_plan():
    # No order without neighbours exists; the plan must still hold every stimulus.
    stimuli = make_stimuli(1, METHODS)
    plan = protocol.plan_session(stimuli, slot=0, seed=3, per_rater=None, repeats=2, calibration_images=1)
    assert sorted(p.stimulus_id for p in rated_part(plan) if not p.is_repeat) == [1, 2, 3, 4, 5]


def test_same_seed_same_plan_other_seed_other_order():
    stimuli = make_stimuli(8, METHODS)
    kwargs = dict(slot=2, per_rater=None, repeats=2, calibration_images=2)
    assert protocol.plan_session(stimuli, seed=42, **kwargs) == protocol.plan_session(stimuli, seed=42, **kwargs)
    assert protocol.plan_session(stimuli, seed=42, **kwargs) != protocol.plan_session(stimuli, seed=43, **kwargs)


def test_balanced_subsets_reach_every_stimulus_evenly():
    stimuli = make_stimuli(10, METHODS)  # 50 stimuli
    per_rater = 15
    counts: Counter = Counter()
    for slot in range(17):
        assigned = protocol.assign_stimuli(stimuli, slot=slot, per_rater=per_rater)
        assert len(assigned) == per_rater == len(set(assigned))
        methods_per_image = Counter(k[1] for k in assigned)
        assert set(methods_per_image.values()) <= {1, 2}  # each image under 1-2 methods here
        assert len({k[2] for k in assigned}) == len(METHODS)  # every method represented
        counts.update(k[0] for k in assigned)
        target = (slot + 1) * per_rater / len(stimuli)
        values = [counts[k[0]] for k in stimuli]
        assert max(values) - min(values) <= 1
        assert all(abs(v - target) < 1 for v in values)


def test_each_rater_sees_each_image_under_several_methods_when_the_subset_allows():
    stimuli = make_stimuli(4, METHODS)  # 20 stimuli
    assigned = protocol.assign_stimuli(stimuli, slot=3, per_rater=12)
    per_image = Counter(k[1] for k in assigned)
    assert set(per_image) == {1, 2, 3, 4} and min(per_image.values()) >= 3
    for image_id in per_image:
        assert len({k[2] for k in assigned if k[1] == image_id}) == per_image[image_id]


def test_calibration_shows_nearest_as_1_and_hr_as_5_first():
    stimuli, calibration = make_stimuli(5, METHODS), calibration_stimuli(4)
    plan = protocol.plan_session(stimuli, calibration_stimuli=calibration, slot=0, seed=7, per_rater=None, repeats=0,
                                 calibration_images=2)
    shown = [p for p in plan if p.is_calibration]
    assert plan[: len(shown)] == shown
    method_of = {k[0]: k[2] for k in calibration}
    assert [(method_of[p.stimulus_id], p.calibration_score) for p in shown] == [
        ("nearest", 1), ("hr", 5), ("nearest", 1), ("hr", 5)
    ]
    # Without calibration images there are no examples, and the rated part is whole.
    bare = protocol.plan_session(stimuli, slot=0, seed=7, per_rater=None, repeats=0, calibration_images=2)
    assert not any(p.is_calibration for p in bare) and len(bare) == len(stimuli)


def test_calibration_uses_what_exists_and_the_organiser_is_told():
    half = [k for k in calibration_stimuli(3) if k[2] == "hr"]
    plan = protocol.calibration_plan(half, images=2, rng=random.Random(0))
    assert [p.calibration_score for p in plan] == [5, 5]
    assert protocol.calibration_note(available=2, wanted=2) is None
    assert protocol.calibration_note(available=0, wanted=0) is None
    assert "1 calibration image(s) of the 2" in protocol.calibration_note(available=1, wanted=2)
    assert "no calibration images" in protocol.calibration_note(available=0, wanted=2)


def test_raters_needed_for_a_target():
    assert protocol.raters_needed(n_stimuli=500, per_rater=None, target_ratings=26) == 26
    assert protocol.raters_needed(n_stimuli=500, per_rater=100, target_ratings=26) == 130
