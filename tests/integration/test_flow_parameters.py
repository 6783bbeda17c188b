"""Issue 26 item 4: deployment parameters as Prefect's CLI sends them: `-p slot_spec=923` arrives as
the number 923 (JSON) and must be accepted as the epoch it names."""
from __future__ import annotations

import pytest

from iq_etl.errors import SettingsError
from iq_etl.orchestration.run_context import spec_text


@pytest.mark.parametrize("flow_name", ["ingest_flow", "pipeline_flow"])
def test_a_numeric_slot_spec_passes_prefect_validation(flow_name):
    from iq_etl.orchestration import flows

    flow = getattr(flows, flow_name)
    assert flow.validate_parameters({"slot_spec": 923})["slot_spec"] == 923
    assert flow.validate_parameters({"slot_spec": "398736000:398736100"})["slot_spec"] == "398736000:398736100"


def test_backfill_takes_a_numeric_slot_spec_too():
    from iq_etl.orchestration.backfill import backfill_flow

    assert backfill_flow.validate_parameters({"slot_spec": 923})["slot_spec"] == 923


def test_spec_text():
    assert spec_text(923) == "923" and spec_text("1-2") == "1-2" and spec_text(None) is None
    with pytest.raises(SettingsError):
        spec_text(True)
    with pytest.raises(SettingsError):
        spec_text(-1)
