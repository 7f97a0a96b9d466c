"""The rating protocol of the paper (Ledig et al. 2017, Sec. 3.4), made robust.

Pure functions, no database: which stimuli a rater gets (all, or a balanced subset), in which
order (random from a recorded seed, never the same image twice in a row), which hidden
test-retest duplicates are added (never adjacent to their original), and which calibration
examples come first (nearest neighbour as a 1, the original HR as a 5, not counted), taken from
separate calibration-only images, as the paper calibrated on images outside BSD100.

A stimulus is given here as ``(stimulus_id, image_id, method_name)``.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from dataclasses import dataclass

# The condition roles are the ratings contract's: nearest is shown as an example of 1 (Bad), the
# reference (hr) as one of 5 (Excellent), and both are hidden among the rated stimuli as gold items.
from survey.ratings import CALIBRATION_HIGH, CALIBRATION_LOW

StimulusKey = tuple[int, int, str]  # (stimulus id, image id, method name)


@dataclass(frozen=True)
class PlannedItem:
    stimulus_id: int
    image_id: int
    is_repeat: bool = False
    is_calibration: bool = False
    calibration_score: int | None = None


def assignment_cycle(stimuli: list[StimulusKey]) -> list[StimulusKey]:
    """All stimuli in a fixed cyclic order in which any window of n_images consecutive
    items shows each image once, under methods that rotate from image to image.

    Raters take consecutive windows of this cycle, so after k raters every stimulus has been
    assigned floor or ceil(k * per_rater / len(stimuli)) times.
    """
    methods_of: dict[int, list[StimulusKey]] = defaultdict(list)
    for key in sorted(stimuli, key=lambda k: (k[1], k[2], k[0])):
        methods_of[key[1]].append(key)
    image_ids = sorted(methods_of)
    rounds = max((len(v) for v in methods_of.values()), default=0)
    cycle = []
    for r in range(rounds):
        for i, image_id in enumerate(image_ids):
            keys = methods_of[image_id]
            if r < len(keys):
                cycle.append(keys[(i + r) % len(keys)])
    return cycle


def assign_stimuli(stimuli: list[StimulusKey], *, slot: int, per_rater: int | None) -> list[StimulusKey]:
    """The stimuli of the rater in ``slot`` (0, 1, 2, ... in order of joining)."""
    cycle = assignment_cycle(stimuli)
    if per_rater is None or per_rater >= len(cycle):
        return cycle
    start = (slot * per_rater) % len(cycle)
    return [cycle[(start + k) % len(cycle)] for k in range(per_rater)]


def _feasible(counts: Counter, *, last: int | None) -> bool:
    """Can these counts be arranged with no equal neighbours, not starting with ``last``?"""
    remaining = sum(counts.values())
    for image_id, count in counts.items():
        limit = remaining // 2 if image_id == last else (remaining + 1) // 2
        if count > limit:
            return False
    return True


def order_without_repeats(items: list[StimulusKey], *, rng: random.Random) -> list[StimulusKey]:
    """A random order with no image twice in a row (when at all possible).

    Each step picks at random (weighted by what is left) among the images that keep the rest
    arrangeable, so it never paints itself into a corner; if the input allows no such order
    (e.g. a single image), it falls back to the best it can do.
    """
    pools: dict[int, list[StimulusKey]] = defaultdict(list)
    for key in items:
        pools[key[1]].append(key)
    for pool in pools.values():
        rng.shuffle(pool)
    counts = Counter({image_id: len(pool) for image_id, pool in pools.items()})
    order: list[StimulusKey] = []
    last = None
    while +counts:
        candidates = [g for g in sorted(counts) if counts[g] > 0 and g != last]
        safe = []
        for g in candidates:
            counts[g] -= 1
            if _feasible(counts, last=g):
                safe.append(g)
            counts[g] += 1
        if safe:
            chosen = rng.choices(safe, weights=[counts[g] for g in safe])[0]
        elif candidates:  # infeasible input: take the most frequent other image
            chosen = max(candidates, key=lambda g: counts[g])
        else:  # only the last image is left
            chosen = last  # type: ignore[assignment]
        order.append(pools[chosen].pop())
        counts[chosen] -= 1
        last = chosen
    return order


def insert_repeats(order: list[StimulusKey], *, count: int, rng: random.Random) -> list[tuple[StimulusKey, bool]]:
    """Add ``count`` hidden duplicates of random items, each placed later than its original,
    and never next to an item of the same image (so never adjacent to its original).

    Returns ``(key, is_repeat)`` pairs.
    """
    sequence = [(key, False) for key in order]
    candidates = list(range(len(order)))
    rng.shuffle(candidates)
    added = 0
    for original_index in candidates:
        if added == count:
            break
        key = order[original_index]
        original_at = sequence.index((key, False))
        slots = [
            j
            for j in range(original_at + 2, len(sequence) + 1)
            if sequence[j - 1][0][1] != key[1] and (j == len(sequence) or sequence[j][0][1] != key[1])
        ]
        if slots:
            sequence.insert(rng.choice(slots), (key, True))
            added += 1
    return sequence


def calibration_plan(calibration_stimuli: list[StimulusKey], *, images: int, rng: random.Random) -> list[PlannedItem]:
    """Examples shown first, from the study's calibration-only images (never rated): for each of
    ``images`` of them, the nearest-neighbour version labelled 1, then the original labelled 5.

    Images with both versions are preferred; one with a single version shows that one.
    """
    by_image: dict[int, dict[str, StimulusKey]] = defaultdict(dict)
    for key in calibration_stimuli:
        by_image[key[1]][key[2]] = key
    usable = sorted(i for i, m in by_image.items() if CALIBRATION_LOW in m or CALIBRATION_HIGH in m)
    both = [i for i in usable if {CALIBRATION_LOW, CALIBRATION_HIGH} <= set(by_image[i])]
    pool = both if len(both) >= images else usable
    picked = sorted(rng.sample(pool, k=min(images, len(pool))))
    plan = []
    for image_id in picked:
        for method, score in ((CALIBRATION_LOW, 1), (CALIBRATION_HIGH, 5)):
            key = by_image[image_id].get(method)
            if key is not None:
                plan.append(PlannedItem(key[0], image_id, is_calibration=True, calibration_score=score))
    return plan


def calibration_note(*, available: int, wanted: int) -> str | None:
    """What to tell the organiser when a study has fewer calibration images than it asks for."""
    if available >= wanted:
        return None
    if available == 0:
        return (
            f"This study has no calibration images ({wanted} asked for): raters start rating without "
            f"examples. Run python -m survey.prepare for it again to add them."
        )
    return f"This study has {available} calibration image(s) of the {wanted} asked for; raters see those."


def plan_session(
    stimuli: list[StimulusKey],
    *,
    calibration_stimuli: list[StimulusKey] = (),
    slot: int,
    seed: int,
    per_rater: int | None,
    repeats: int,
    calibration_images: int,
    assigned: list[StimulusKey] | None = None,
) -> list[PlannedItem]:
    """The whole sequence one rater sees: calibration examples (from ``calibration_stimuli``, the
    calibration-only images' stimuli, never among ``stimuli``), then the rated items with their
    hidden duplicates. The same arguments always give the same plan.

    ``assigned``: the stimuli to rate when they are not the slot's window: the unrated remainder
    of an abandoned session, handed to this rater (see ``survey.store``)."""
    rated_images = {key[1] for key in stimuli}
    if any(key[1] in rated_images for key in calibration_stimuli):
        raise ValueError("a calibration image is among the rated images")
    rng = random.Random(seed)
    calibration = calibration_plan(list(calibration_stimuli), images=calibration_images, rng=rng)
    if assigned is None:
        assigned = assign_stimuli(stimuli, slot=slot, per_rater=per_rater)
    else:  # a fixed order in, so the plan depends on the seed alone
        assigned = sorted(assigned, key=lambda k: (k[1], k[2], k[0]))
    order = order_without_repeats(assigned, rng=rng)
    rated = [
        PlannedItem(key[0], key[1], is_repeat=is_repeat)
        for key, is_repeat in insert_repeats(order, count=repeats, rng=rng)
    ]
    return calibration + rated


def same_image_adjacent(image_ids: list[int]) -> bool:
    return any(a == b for a, b in zip(image_ids, image_ids[1:]))


def raters_needed(*, n_stimuli: int, per_rater: int | None, target_ratings: int) -> int:
    """How many raters give every stimulus at least ``target_ratings`` ratings."""
    per = n_stimuli if per_rater is None else min(per_rater, n_stimuli)
    return -(-target_ratings * n_stimuli // per) if per else 0
