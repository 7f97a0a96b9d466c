"""First-showing ratings as integer codes: the one compact form every statistic works on.

Raters and images are sorted by name, methods in the paper's order (``ratings.method_order``),
stimuli (image, method pairs that were rated) in image-then-method order. Codes index those lists,
so a per-rater or per-stimulus sum is one ``np.bincount``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from survey.ratings import first_showings, method_order


@dataclass(frozen=True)
class Coded:
    raters: list[str]
    images: list[str]
    methods: list[str]
    rater_idx: np.ndarray
    image_idx: np.ndarray
    method_idx: np.ndarray
    stimulus_idx: np.ndarray  # into stimulus_image / stimulus_method
    stimulus_image: np.ndarray  # per stimulus: its image code
    stimulus_method: np.ndarray  # per stimulus: its method code
    scores: np.ndarray  # float64

    @property
    def n_stimuli(self) -> int:
        return int(self.stimulus_image.size)

    def stimulus_keys(self) -> pd.MultiIndex:
        """(image, method) of each stimulus code."""
        return pd.MultiIndex.from_arrays(
            [np.asarray(self.images, dtype=object)[self.stimulus_image],
             np.asarray(self.methods, dtype=object)[self.stimulus_method]], names=["image", "method"])

    @cached_property
    def cells(self) -> tuple[np.ndarray, np.ndarray]:
        """Dense per-(rater, image, method) score sums and rating counts."""
        shape = (len(self.raters), len(self.images), len(self.methods))
        flat = np.ravel_multi_index((self.rater_idx, self.image_idx, self.method_idx), shape)
        size = int(np.prod(shape))
        sums = np.bincount(flat, weights=self.scores, minlength=size).reshape(shape)
        counts = np.bincount(flat, minlength=size).astype(np.float64).reshape(shape)
        return sums, counts


def code_ratings(ratings: pd.DataFrame, *, methods: list[str] | None = None) -> Coded:
    """Code the first showings; with ``methods``, only those (in that order) are kept."""
    first = first_showings(ratings)
    methods = method_order(first["method"].unique()) if methods is None else list(methods)
    rater_codes, raters = _codes(first["rater"])
    image_codes, images = _codes(first["image"])
    method_idx = pd.Categorical(first["method"], categories=methods).codes.astype(np.int64)
    keep = method_idx >= 0
    rater_idx, image_idx, method_idx = rater_codes[keep], image_codes[keep], method_idx[keep]
    dense = image_idx * max(len(methods), 1) + method_idx
    present, stimulus_idx = np.unique(dense, return_inverse=True)
    return Coded(
        raters=raters, images=images, methods=methods,
        rater_idx=rater_idx, image_idx=image_idx, method_idx=method_idx,
        stimulus_idx=stimulus_idx.astype(np.int64).ravel(),
        stimulus_image=present // max(len(methods), 1), stimulus_method=present % max(len(methods), 1),
        scores=first["score"].to_numpy(dtype=np.float64)[keep],
    )


def _codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    """Codes into the sorted distinct values (one hash pass, then a sort of the few uniques)."""
    codes, uniques = pd.factorize(values.to_numpy(), sort=True)
    return codes.astype(np.int64), [str(u) for u in uniques]
