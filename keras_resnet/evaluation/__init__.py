"""See what a model learned: ``evaluate`` streams a split through it and writes a report
directory (``metrics.json``, ``report.html``, confusion matrix, reliability diagram, per-class
accuracy and an error gallery with Grad-CAM heat maps); with ``server=`` it also checks that a
served model answers what the local one does."""

from __future__ import annotations

from keras_resnet.evaluation.evaluator import evaluate
from keras_resnet.evaluation.grad_cam import FeatureHead, split_head

__all__ = ["FeatureHead", "evaluate", "split_head"]
