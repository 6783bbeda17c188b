"""The flows' typed parameters and their version.

Prefect validates a pydantic model parameter before the run starts and shows it as a form in the UI
(Prefect 3: a nested form per model; a deployment stores it as a nested JSON object). The ingest
options are one model, `iq_etl.ingest.request.IngestParams`, shared by the CLI, every flow and the
stage; the export options are `ExportParams`. The slot spec stays a top-level parameter of its own, so
that `prefect deployment run … -p slot_spec=923` (top-level keys only) picks what to read.

`PARAMS_VERSION` is the shape of these parameters. prefect.yaml writes it into each deployment
(`params_version`); a flow refuses a stored deployment whose version differs, with a message that says
to redeploy, instead of running with options it would misread. A deployment registered before the
parameters had a version has flat keys (`source`, `car_url`, …) that no flow accepts any more: Prefect
itself refuses its runs ("Function expects parameters …"); the cure is the same.
"""
from __future__ import annotations

from typing import Union

from pydantic import BaseModel, ConfigDict, Field

from iq_etl.errors import SettingsError
from iq_etl.ingest.request import IngestParams

PARAMS_VERSION = 2   # 1: flat parameters (before 2026-12); 2: `ingest` / `export` models, `params_version`

# `-p slot_spec=923` arrives as the number 923 (JSON): an epoch number is a valid slot spec.
SlotSpec = Union[str, int, None]


class ExportParams(BaseModel):
    """Where and how complete uploads are exported (the `export` parameter of the flows)."""
    model_config = ConfigDict(extra="forbid", frozen=True)

    targets: list[str] | None = Field(default=None, description="reader endpoints (http/https) or folders (file:///abs/dir); "
                                      "null: the reader backend IQ_READER_BASE_URL + IQ_READER_ENDPOINT_PATH")
    concurrency: int | None = Field(default=None, ge=1, description="uploads sent at once per target; null: 8")
    dry_run: bool = Field(default=False, description="record what would be sent, send nothing")


# Defaults of the flows' model parameters (a name, not a call, in each signature).
INGEST = IngestParams()    # source None: the flow's default (pipeline_flow follows the chain)
EXPORT = ExportParams()


def check_params_version(flow_name: str, params_version: int) -> None:
    """Refuse parameters of another shape (a deployment registered by another iq-etl version)."""
    if params_version != PARAMS_VERSION:
        raise SettingsError(
            f"{flow_name}: the deployment's parameters are version {params_version}, this iq-etl reads version "
            f"{PARAMS_VERSION}: register the deployment again (`prefect --no-prompt deploy --all` from the "
            "checkout the worker runs; prefect.yaml has the new parameters) and trigger the run again")


__all__ = ["EXPORT", "INGEST", "PARAMS_VERSION", "ExportParams", "IngestParams", "SlotSpec",
           "check_params_version"]
