"""A run whose export delivers nothing must not end green (operations issue, item 10): the flow run
fails with a state message, logs a WARNING, and its status artifact shows the deliveries per target.
IQ_EXPORT_FAILURE_POLICY=warn keeps the run green but still warns. A real Prefect API and a real
loopback reader backend that refuses the (missing) token."""
from __future__ import annotations

import logging

import pytest

from tests.support.prefect import artifacts_of, build_devchain, flow_env, prefect_api  # noqa: F401 - fixture


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    return build_devchain(tmp_path_factory.mktemp("chain"))


def _run(chain, tmp_path, monkeypatch, caplog, **env):
    from iq_etl.devchain.chain import car_template
    from iq_etl.devchain.servers.reader_backend import serve_reader_backend
    from iq_etl.orchestration.flows import pipeline_flow
    from iq_etl.orchestration.params import ExportParams, IngestParams

    chain_dir, manifest = chain
    flow_env(monkeypatch, tmp_path, IQ_EXPORT_MAX_ATTEMPTS="1", **env)
    backend = serve_reader_backend(token="only-the-real-uploader-knows")  # we send none: 401 for every upload
    # Prefect's run loggers do not propagate to the root logger: listen on them directly.
    run_logger = logging.getLogger("prefect.flow_runs")
    run_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING):
            state = pipeline_flow(slot_spec=f"{manifest.first_slot}:{manifest.last_slot}",
                                  ingest=IngestParams(source="car", car_url=car_template(chain_dir),
                                                      extra_program_ids=list(manifest.extra_program_ids)),
                                  export=ExportParams(targets=[(tmp_path / "exports").as_uri(), backend.url]),
                                  return_state=True)
    finally:
        run_logger.removeHandler(caplog.handler)
        backend.shutdown()
    complete = sum(u.expected_status == "complete" for u in manifest.uploads)
    return state, backend, complete


@pytest.mark.slow  # end to end (a flow over a whole dev chain): CI runs it with the slow suite
def test_failed_deliveries_fail_the_flow_run_with_a_message(chain, tmp_path, monkeypatch, caplog,
                                                            prefect_api):  # noqa: F811
    from iq_etl.errors import DeliveryFailed

    state, backend, complete = _run(chain, tmp_path, monkeypatch, caplog)
    assert state.is_failed(), state
    assert f"export to {backend.url}: 0 of {complete} delivered, {complete} failed, 0 refused" in state.message
    assert "file://" not in state.message  # the folder target delivered everything: not named as failing
    data = state.result(raise_on_failure=False)
    assert isinstance(data, DeliveryFailed)
    by_target = {e.target: e for e in data.result.export}
    assert by_target[backend.url].failed == complete
    assert any(r.levelno == logging.WARNING and "0 of" in r.getMessage() for r in caplog.records)

    from iq_etl.orchestration.flows import STATUS_ARTIFACT_KEY

    artifact = next(a for a in artifacts_of(state.state_details.flow_run_id) if a.key == STATUS_ARTIFACT_KEY)
    markdown = artifact.data
    assert "## This run's exports" in markdown and "Deliveries by target" in markdown
    row = next(line for line in markdown.splitlines() if line.startswith(f"| {backend.url} |") and "0 |" in line)
    assert f"| {complete} | 0 |" in row  # waiting, delivered
    # per target: complete uploads never delivered to the backend, none left for the folder
    status_rows = [line for line in markdown.splitlines() if line.startswith("| ") and backend.url in line]
    assert any(f"| {complete} |" in line for line in status_rows)


@pytest.mark.slow  # end to end (a flow over a whole dev chain): CI runs it with the slow suite
def test_warn_policy_keeps_the_run_green_but_warns(chain, tmp_path, monkeypatch, caplog, prefect_api):  # noqa: F811
    state, backend, complete = _run(chain, tmp_path, monkeypatch, caplog, IQ_EXPORT_FAILURE_POLICY="warn")
    assert state.is_completed(), state
    assert any(r.levelno == logging.WARNING and f"0 of {complete} delivered" in r.getMessage()
               for r in caplog.records)
