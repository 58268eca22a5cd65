"""Inspection: the read side of run directories for `exp` and notebooks (summaries, comparison, cleaning,
plotting, resume); it never imports the torch-heavy layers."""
