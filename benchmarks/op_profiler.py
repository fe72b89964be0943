"""Where the time goes: TensorFlow profiler traces summed by op type, side by side.

``op_times`` runs a function under ``tf.profiler.experimental`` and reads the trace it writes
(an ``XSpace`` protobuf, the file TensorBoard's profile plugin shows) with TensorFlow's own proto
classes. Every executed op is an event named ``"<op name>:<op type>"`` on a ``tf_Compute`` thread;
summing the events by type gives the op-type breakdown TensorBoard calls "TF ops". Fused ops
appear under their fused type, which depends on the TensorFlow build and the CPU: e.g.
``_FusedConv2D`` for Conv2D + FusedBatchNorm + ReLU, ``_MklNativeFusedConv2D`` for the same fusion
in oneDNN builds on AVX-512 CPUs.

A development tool (used by ``profile_ops.py`` and the tests), not part of the installed package.
"""

from __future__ import annotations

import collections
import glob
import os
import tempfile

from keras_resnet import checks


def op_times(fn, *, repeats=3):
    """Profiles ``repeats`` calls of ``fn`` (call it once before, to trace and warm up).

    Args:
        fn: a function of no arguments, e.g. one step of a ``tf.function``.
        repeats: calls to profile; the result is per call.

    Returns:
        ``{op type: seconds per call}``, summed over the threads that ran the op (so on a
        multi-core machine the total can exceed the wall time).

    Raises:
        TypeError: if ``repeats`` is not an int.
        ValueError: if ``repeats`` is not positive.
        RuntimeError: if the profiler wrote no trace.
    """
    checks.positive_int(repeats, "repeats")
    import tensorflow as tf
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        try:
            for _ in range(repeats):
                fn()
        finally:
            tf.profiler.experimental.stop()
        paths = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        if not paths:
            raise RuntimeError(f"the TensorFlow profiler wrote no trace under {logdir}")
        space = xplane_pb2.XSpace()
        with open(paths[0], "rb") as f:
            space.ParseFromString(f.read())
    totals = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                # Ops are "name:type"; the executor's own events are "Class::method".
                if ":" in name and "::" not in name:
                    totals[name.rsplit(":", 1)[1]] += event.duration_ps
    return {op: ps * 1e-12 / repeats for op, ps in totals.most_common()}


def compare(functions, *, repeats=3, top=10):
    """Profiles several functions and returns a Markdown table of ms per call by op type.

    Args:
        functions: ``{column name: function of no arguments}``; each is called once first.
        repeats: profiled calls of each function.
        top: op types to list (by their largest time in any column); the rest are summed.

    Returns:
        The table as a string; the last row is the total op time.
    """
    profiles = {}
    for name, fn in functions.items():
        fn()
        profiles[name] = op_times(fn, repeats=repeats)
    ops = sorted({op for p in profiles.values() for op in p},
                 key=lambda op: -max(p.get(op, 0.0) for p in profiles.values()))
    names = list(profiles)
    lines = ["| op type | " + " | ".join(f"{n} (ms)" for n in names) + " |",
             "|---|" + "---:|" * len(names)]
    for op in ops[:top]:
        lines.append(f"| {op} | " + " | ".join(f"{1e3 * profiles[n].get(op, 0.0):.1f}"
                                             for n in names) + " |")
    if len(ops) > top:
        lines.append(f"| {len(ops) - top} other op types | " + " | ".join(
            f"{1e3 * sum(profiles[n].get(op, 0.0) for op in ops[top:]):.1f}" for n in names)
            + " |")
    lines.append("| **total op time** | " + " | ".join(
        f"**{1e3 * sum(profiles[n].values()):.1f}**" for n in names) + " |")
    return "\n".join(lines)
