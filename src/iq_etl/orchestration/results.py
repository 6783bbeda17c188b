"""What the flows return: typed results (the stages' own dataclasses), read by attribute by the
commands that run the flows; `to_json()` gives the `--json` output."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from iq_etl.export.runner import ExportSummary
    from iq_etl.ingest.follow import FollowResult
    from iq_etl.ingest.run import IngestSummary
    from iq_etl.reconcile.plan import ReconcilePlan, ReconcileSummary
    from iq_etl.transform.runner import DbtResult


def follow_json(followed: FollowResult) -> dict[str, Any]:
    return {**followed.to_json(), "line": followed.line()}


@dataclass
class PipelineResult:
    """One pipeline run: the ingest (or the follow round; neither when ingest was skipped), the dbt
    build, one export per target, and the status report published after it."""
    transform: DbtResult
    ingest: IngestSummary | None = None
    follow: FollowResult | None = None
    export: list[ExportSummary] = field(default_factory=list)
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def slots_covered(self) -> int:
        if self.follow is not None:
            return self.follow.slots_covered
        return sum(r["last_slot"] - r["first_slot"] + 1 for r in (self.ingest.ranges if self.ingest else [])
                   if r["status"] == "done")

    @property
    def rows_written(self) -> int:
        if self.follow is not None:
            return self.follow.rows_written
        return self.ingest.rows_written if self.ingest else 0

    def to_json(self) -> dict[str, Any]:
        return {"ingest": self.ingest.to_json() if self.ingest else None,
                "follow": follow_json(self.follow) if self.follow else None,
                "transform": self.transform.to_dict(), "export": [e.to_dict() for e in self.export],
                "status": self.status}


@dataclass
class ReconcileResult:
    summary: ReconcileSummary
    plan: ReconcilePlan
    export: list[ExportSummary] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"summary": self.summary.to_json(), "plan": self.plan.to_json(),
                "export": [e.to_dict() for e in self.export]}


def deliveries_failed(exported: list[ExportSummary]) -> int:
    return sum(e.failed + e.refused for e in exported)


__all__ = ["PipelineResult", "ReconcileResult", "deliveries_failed", "follow_json"]
