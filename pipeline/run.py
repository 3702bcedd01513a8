"""The pipeline's one entry point: dataset zip in, report + balanced zip + samples out."""

from __future__ import annotations

from collections.abc import Callable

# progress(stage, fraction): stage is one of STAGES; fraction is the whole job's progress, 0..1.
# The callback may raise (e.g. to cancel a job); the exception propagates and nothing is left
# half-written in out_dir.
ProgressFn = Callable[[str, float], None]

STAGES = ("validating", "training_gan", "training_classifier", "evaluating", "packaging")
