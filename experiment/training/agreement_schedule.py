"""When the ranks of a distributed run agree on signals and stops: not at every step (an all-reduce
per step costs), but at optimizer steps about a second of training apart, picked so that every rank
meets at the same one (:class:`AgreementSchedule`)."""

from __future__ import annotations

import time

#: Seconds of training between two agreements of the ranks on signals and stops (well within
#: torchrun's 30 s grace between its SIGTERM and its SIGKILL).
AGREEMENT_SECONDS = 1.0


class AgreementSchedule:
    """The optimizer steps at which the ranks agree on signals and stops.

    Every rank proposes the step that lies about :data:`AGREEMENT_SECONDS` of training ahead at
    its own pace; the agreed step is the largest proposal, so all ranks meet at the same step.
    """

    def __init__(self, seconds: float = AGREEMENT_SECONDS) -> None:
        self.seconds = seconds
        self.next_step = 1
        self._last: tuple[int, float] | None = None

    def due(self, step: int) -> bool:
        return step >= self.next_step

    def proposal(self, step: int) -> int:
        """The step this rank proposes for the next agreement."""
        now = time.perf_counter()
        last, self._last = self._last, (step, now)
        if last is None or step <= last[0]:
            return step + 1
        per_step = (now - last[1]) / (step - last[0])
        return step + max(1, min(100_000, int(self.seconds / max(per_step, 1e-9))))

    def agreed(self, next_step: int) -> None:
        self.next_step = next_step
