"""TensorBoard's custom-scalars layout that draws each metric with its validation twin.

TensorBoard's Scalars tab draws one chart per tag, so ``loss`` and ``val_loss`` land on separate
charts. A custom-scalars layout (the Custom Scalars tab) groups tags by pattern: this module builds
one with a chart per metric logged with a ``val_`` twin. It names tags only and imports nothing of
TensorBoard, so that both the run's own event files (``experiment.run.recording``) and the
``TensorBoardLogger`` callback write the same layout.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any

#: The custom-scalars category under which each metric's training and validation curves share a chart.
LAYOUT_CATEGORY = "training and validation"


def paired_layout(keys: Collection[str]) -> dict[str, dict[str, list[Any]]]:
    """A custom-scalars layout with one chart per metric logged with a ``val_`` twin, in the order
    of ``keys``, for ``SummaryWriter.add_custom_scalars``.

    The chart ``loss`` shows the tags ``loss`` and ``val_loss`` (tag patterns match whole names).
    Empty when no key has a twin.

    Example:
        >>> paired_layout(["loss", "acc", "val_loss", "lr"])
        {'training and validation': {'loss': ['Multiline', ['loss$', 'val_loss$']]}}
    """
    names = [key for key in keys if not key.startswith("val_") and f"val_{key}" in keys]
    charts = {name: ["Multiline", [f"{re.escape(name)}$", f"val_{re.escape(name)}$"]] for name in names}
    return {LAYOUT_CATEGORY: charts} if charts else {}
