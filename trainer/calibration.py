"""Are the predicted probabilities probabilities? Expected calibration error (ECE).

Hand-written because scikit-learn has `calibration_curve` but no ECE: the predictions
are put into equal-width bins of confidence (the probability of the predicted class),
and ECE is the sample-weighted mean gap |accuracy - mean confidence| over the bins
(Guo et al. 2017). 0 is perfectly calibrated. A perfect classifier trained with label
smoothing 0.1 towards p = 0.95 would score 0.05.
"""

from __future__ import annotations

import numpy as np

BINS = 15


def expected_calibration_error(y_true: np.ndarray, p_positive: np.ndarray, bins: int = BINS) -> float:
    y_true = np.asarray(y_true).astype(int)
    p = np.asarray(p_positive, dtype=np.float64)
    if len(p) == 0:
        return 0.0
    predicted = (p >= 0.5).astype(int)
    confidence = np.where(predicted == 1, p, 1.0 - p)  # in [0.5, 1]
    correct = (predicted == y_true).astype(np.float64)
    # bin edges over [0, 1]; confidence 1.0 goes into the last bin
    idx = np.minimum((confidence * bins).astype(int), bins - 1)
    ece = 0.0
    for b in np.unique(idx):
        sel = idx == b
        ece += sel.mean() * abs(correct[sel].mean() - confidence[sel].mean())
    return float(ece)


def true_class_probability(y_true: np.ndarray, p_positive: np.ndarray) -> np.ndarray:
    p = np.asarray(p_positive, dtype=np.float64)
    return np.where(np.asarray(y_true).astype(int) == 1, p, 1.0 - p)
