"""Issue 26 item 4 and issue 23 item 3: the flows' parameters as Prefect sends them. `-p slot_spec=923`
arrives as the number 923 (JSON) and must be accepted as the epoch it names; the ingest and export
options are pydantic models (validated before a run, a form in the UI) that the CLI builds too; a
deployment of another parameter version is refused with a message that says what to do."""
from __future__ import annotations

import argparse

import pytest
from prefect.exceptions import ParameterTypeError

from iq_etl.errors import SettingsError
from iq_etl.ingest.request import DEFAULTS, SOURCES, IngestParams
from iq_etl.orchestration.params import PARAMS_VERSION, ExportParams, check_params_version
from iq_etl.orchestration.run_context import spec_text
from tests.support.prefect import flow_env, prefect_api  # noqa: F401 - fixture

FLOWS = ("ingest_flow", "pipeline_flow", "reconcile_flow", "transform_flow", "export_flow")


def _flow(name):
    from iq_etl.orchestration import flows
    from iq_etl.orchestration.backfill import backfill_flow

    return backfill_flow if name == "backfill_flow" else getattr(flows, name)


@pytest.mark.parametrize("flow_name", ["ingest_flow", "pipeline_flow", "backfill_flow"])
def test_a_numeric_slot_spec_passes_prefect_validation(flow_name):
    flow = _flow(flow_name)
    assert flow.validate_parameters({"slot_spec": 923})["slot_spec"] == 923
    assert flow.validate_parameters({"slot_spec": "398736000:398736100"})["slot_spec"] == "398736000:398736100"


def test_the_ingest_options_arrive_as_one_validated_model():
    from iq_etl.orchestration.flows import pipeline_flow

    # as a deployment stores them: a nested JSON object
    params = pipeline_flow.validate_parameters({"slot_spec": 923, "ingest": {"car_url": "/c/{epoch}.car",
                                                                               "max_signature_pages": 3},
                                                "export": {"targets": ["file:///tmp/x"]}})
    ingest = params["ingest"]
    assert isinstance(ingest, IngestParams) and isinstance(params["export"], ExportParams)
    assert (ingest.car_url, ingest.max_signature_pages, ingest.slot_padding) == ("/c/{epoch}.car", 3,
                                                                                 DEFAULTS.slot_padding)
    request = ingest.request("923", run_id="r1")
    assert (request.slot_spec, request.source, request.car_url, request.max_signature_pages, request.run_id) == \
        ("923", "car", "/c/{epoch}.car", 3, "r1")
    # refused before the run starts: a bad number, an unknown source, a misspelt option
    for bad in ({"max_signature_pages": 0}, {"source": "carr"}, {"max_signature_page": 3}):
        with pytest.raises(ParameterTypeError):
            pipeline_flow.validate_parameters({"ingest": bad})


def test_the_model_shows_every_source_and_the_request_defaults():
    schema = IngestParams.model_json_schema()["properties"]
    enum = next(option["enum"] for option in schema["source"]["anyOf"] if "enum" in option)
    assert set(enum) == set(SOURCES) | {"follow"}
    defaults = IngestParams().request()
    assert (defaults.slot_padding, defaults.max_signature_pages, defaults.resume, defaults.subrange_slots,
            defaults.source) == (DEFAULTS.slot_padding, DEFAULTS.max_signature_pages, DEFAULTS.resume,
                                 DEFAULTS.subrange_slots, DEFAULTS.source)


def test_the_cli_options_build_the_same_model():
    from iq_etl.cli.flow_commands import add_dask_arguments, add_export_arguments, add_ingest_arguments, ingest_params

    p = argparse.ArgumentParser()
    add_ingest_arguments(p, SOURCES + ("follow",))
    add_dask_arguments(p)
    add_export_arguments(p)
    args = p.parse_args(["923", "--source", "rpc-blocks", "--session-pda", "A,B", "--program-id", "P",
                         "--max-signature-pages", "4", "--dask-workers", "2", "--no-resume"])
    assert ingest_params(args) == IngestParams(source="rpc-blocks", session_pdas=["A", "B"], extra_program_ids=["P"],
                                               max_signature_pages=4, dask_workers=2, resume=False)


@pytest.mark.parametrize("flow_name", FLOWS + ("backfill_flow",))
def test_every_flow_defaults_to_the_current_version(flow_name):
    given = {"slot_spec": 1} if flow_name == "backfill_flow" else {}
    assert _flow(flow_name).validate_parameters(given)["params_version"] == PARAMS_VERSION


def test_a_run_with_parameters_of_another_version_fails_saying_to_redeploy(prefect_api, tmp_path, monkeypatch):  # noqa: F811
    from iq_etl.orchestration.flows import transform_flow

    flow_env(monkeypatch, tmp_path)
    state = transform_flow(params_version=PARAMS_VERSION - 1, return_state=True)
    assert state.is_failed()
    with pytest.raises(SettingsError, match=rf"version {PARAMS_VERSION - 1}, this iq-etl reads version "
                                            rf"{PARAMS_VERSION}: register the deployment again"):
        state.result()
    assert not (tmp_path / "warehouse").exists()   # refused before it touched anything
    with pytest.raises(SettingsError):
        check_params_version("pipeline_flow", PARAMS_VERSION + 1)


def test_prefect_yaml_writes_the_current_version_into_every_deployment():
    from pathlib import Path

    import yaml

    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "prefect.yaml").read_text())
    for deployment in config["deployments"]:
        assert deployment["parameters"]["params_version"] == PARAMS_VERSION, deployment["name"]
        flow_file, flow_name = deployment["entrypoint"].split(":")
        flow = _flow(flow_name)
        flow.validate_parameters({"slot_spec": 923, **deployment["parameters"]} if flow_name == "backfill_flow"
                                 else deployment["parameters"])


def test_spec_text():
    assert spec_text(923) == "923" and spec_text("1-2") == "1-2" and spec_text(None) is None
    with pytest.raises(SettingsError):
        spec_text(True)
    with pytest.raises(SettingsError):
        spec_text(-1)
