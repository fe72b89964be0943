"""Gradient flow diagnostics: per-block gradient norms, branch/shortcut ratios, identity checks.

A *unit* is a residual or plain block when the model names its layers the keras.applications way
(``{block}_1_conv``, ``{block}_2_bn``, ``{block}_add``, ``{block}_out``, as every model of this
package does), otherwise every leaf layer that owns a kernel. For each unit the functions here
report

* ``gradient_norm``: the L2 norm of the loss gradient over the unit's kernels (Conv/Dense);
* ``branch_ratio``: ``||F(X)|| / ||shortcut(X)||`` at the unit's ``Add`` (None without one).

Measurements run the model functionally (``stateless_call``) in training mode, so BatchNorm uses
batch statistics as during ``fit`` and the model's moving statistics are left untouched. Nested
sub-models (the stages of very deep networks) are looked into.
"""

from keras_resnet._tensorflow import require_tensorflow

require_tensorflow("diagnostics (keras_resnet.diagnostics)")

from keras_resnet.diagnostics.callbacks import GradientFlowLogger, TrainingError
from keras_resnet.diagnostics.measure import (UNITS, block_identity_errors, branch_ratios,
                                              gradient_flow, gradient_norms)
from keras_resnet.diagnostics.plots import plot_by_depth

__all__ = ["UNITS", "GradientFlowLogger", "TrainingError", "block_identity_errors",
           "branch_ratios", "gradient_flow", "gradient_norms", "plot_by_depth"]
