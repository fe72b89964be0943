"""Streaming classification metrics: what a batch adds is summed, nothing grows with the data.

`StreamingMetrics.update` takes one batch of labels and probabilities and adds to fixed-size
sums: the confusion counts (classes x classes), the calibration bins (15 x 3), the summed
negative log-likelihood, Brier score and top-5 hits, and a heap of the few most confident
mistakes (for the error gallery). `summary` turns the sums into numbers with scikit-learn:
precision/recall/F1 come from `precision_recall_fscore_support` over the confusion matrix's cells
weighted by their counts, which is exactly what it gives on the per-image labels.
"""

from __future__ import annotations

import heapq
import itertools

import numpy as np
from sklearn import metrics as sk

CALIBRATION_BINS = 15
TOP_K = 5


class StreamingMetrics:
    """Sums over batches for a ``num_classes``-way classifier.

    Args:
        num_classes: the classifier's classes.
        mistakes: how many of the most confident mistakes to keep (with their images).
    """

    def __init__(self, num_classes: int, mistakes: int = 16):
        self.num_classes = num_classes
        self.labels = np.arange(num_classes)
        self.confusion = np.zeros((num_classes, num_classes), np.int64)
        # per bin: images, summed confidence, correct answers
        self.bins = np.zeros((CALIBRATION_BINS, 3), np.float64)
        self.nll_sum = 0.0
        self.brier_sum = 0.0
        self.top_k_hits = 0
        self.count = 0
        self.keep = mistakes
        self._heap = []  # (confidence, tie-break, image, true, predicted)
        self._order = itertools.count()

    def update(self, labels, probabilities, images=None) -> None:
        """Adds one batch: int ``labels`` [n], ``probabilities`` [n, classes], optional images."""
        labels = np.asarray(labels).astype(np.int64).reshape(-1)
        probabilities = np.asarray(probabilities, np.float64)
        # float32 softmax rows sum to 1 within float32's rounding; log_loss checks float64's
        probabilities = probabilities / probabilities.sum(axis=-1, keepdims=True)
        predicted = np.argmax(probabilities, axis=-1)  # first maximum, as Keras' accuracy
        self.confusion += sk.confusion_matrix(labels, predicted, labels=self.labels)
        self.nll_sum += sk.log_loss(labels, probabilities, labels=self.labels, normalize=False)
        one_hot = np.eye(self.num_classes)[labels]
        self.brier_sum += float(np.sum((probabilities - one_hot) ** 2))
        self.top_k_hits += self._top_k(labels, probabilities)
        confidence = probabilities[np.arange(len(labels)), predicted]
        index = np.clip((confidence * CALIBRATION_BINS).astype(int), 0, CALIBRATION_BINS - 1)
        np.add.at(self.bins, index, np.stack([np.ones_like(confidence), confidence,
                                              (predicted == labels).astype(float)], axis=1))
        self.count += len(labels)
        if images is not None and self.keep:
            self._keep_mistakes(np.asarray(images), labels, predicted, confidence)

    def _top_k(self, labels, probabilities) -> int:
        if self.num_classes <= TOP_K:
            return len(labels)
        return int(sk.top_k_accuracy_score(labels, probabilities, k=TOP_K, labels=self.labels,
                                           normalize=False))

    def _keep_mistakes(self, images, labels, predicted, confidence):
        for i in np.flatnonzero(predicted != labels):
            item = (float(confidence[i]), next(self._order), images[i].copy(), int(labels[i]),
                    int(predicted[i]))
            if len(self._heap) < self.keep:
                heapq.heappush(self._heap, item)
            elif item[0] > self._heap[0][0]:
                heapq.heapreplace(self._heap, item)

    def mistakes(self) -> list[dict]:
        """The kept mistakes, most confident first: ``image``, ``true``, ``predicted``,
        ``confidence``."""
        ordered = sorted(self._heap, key=lambda item: (-item[0], item[1]))
        return [{"confidence": c, "image": image, "true": t, "predicted": p}
                for c, _, image, t, p in ordered]

    def summary(self, class_names) -> dict:
        """The metrics as JSON-ready values (see ``evaluate``'s ``metrics.json``)."""
        if self.count == 0:
            raise ValueError("the evaluation split has no images")
        rows, columns = np.nonzero(self.confusion)
        weights = self.confusion[rows, columns]
        precision, recall, f1, support = sk.precision_recall_fscore_support(
            rows, columns, labels=self.labels, sample_weight=weights, zero_division=0)
        means = {}
        for average in ("macro", "weighted"):
            p, r, f, _ = sk.precision_recall_fscore_support(
                rows, columns, labels=self.labels, sample_weight=weights, average=average,
                zero_division=0)
            means[average] = {"precision": float(p), "recall": float(r), "f1": float(f)}
        support = self.confusion.sum(axis=1)  # images, not cells
        return {
            "images": int(self.count),
            "top1_accuracy": float(np.trace(self.confusion) / self.count),
            "top5_accuracy": float(self.top_k_hits / self.count),
            "loss": self.nll_sum / self.count,
            "per_class": [
                {"class": str(name), "precision": float(precision[i]),
                 "recall": float(recall[i]), "f1": float(f1[i]), "support": int(support[i])}
                for i, name in enumerate(class_names)],
            "macro_avg": means["macro"], "weighted_avg": means["weighted"],
            "confusion_matrix": self.confusion.tolist(),
            "calibration": self.calibration(),
        }

    def calibration(self) -> dict:
        """Expected calibration error (15 equal-width confidence bins), NLL and Brier score."""
        counts, confidence, correct = self.bins.T
        filled = counts > 0
        gaps = np.abs(correct[filled] - confidence[filled])
        return {
            "expected_calibration_error": float(np.sum(gaps) / self.count),
            "negative_log_likelihood": self.nll_sum / self.count,
            "brier_score": self.brier_sum / self.count,
            "bins": [{"lower": i / CALIBRATION_BINS, "upper": (i + 1) / CALIBRATION_BINS,
                      "images": int(n),
                      "confidence": float(s / n) if n else None,
                      "accuracy": float(a / n) if n else None}
                     for i, (n, s, a) in enumerate(self.bins)],
        }
