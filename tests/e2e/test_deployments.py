"""Deployments proven against a real Prefect server, a real process worker, MLflow and a real browser."""

from __future__ import annotations

import os
import shutil
import time
from uuid import UUID

import pytest
from e2e_stack import TEST_ARTIFACTS, wait_for_final_state
from mlflow import MlflowClient
from pipeline_probe import ONE_MODEL_TASK_RUNS, task_states
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

pytestmark = pytest.mark.e2e

CPU_DEPLOYMENTS = {"both/both-cpu", "clm/clm-cpu", "mlm/mlm-cpu"}
GPU_DEPLOYMENTS = {"both/both-gpu", "clm/clm-gpu", "mlm/mlm-gpu"}


def deployment(name: str):
    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def deployment_run_ids(deployment_id: UUID) -> set[UUID]:
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
    return {run.id for run in runs}


def the_one_new_run(deployment_id: UUID, before: set[UUID], timeout_s: float = 60) -> str:
    deadline = time.monotonic() + timeout_s
    while not (new := deployment_run_ids(deployment_id) - before):
        assert time.monotonic() < deadline, f"the UI's Submit made no flow run of deployment {deployment_id}"
        time.sleep(1)
    assert len(new) == 1, f"one Submit made {len(new)} flow runs"
    return str(new.pop())


def open_from_runs_tab(page, flow_run_id: str, timeout_s: float = 300) -> None:
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    link = page.locator(f"a[href*='/runs/flow-run/{flow_run_id}']").first
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            link.click(timeout=15_000)
            break
        except PlaywrightTimeout:
            assert time.monotonic() < deadline, f"run {flow_run_id} never appeared on the deployment's Runs tab"
            page.reload()
    page.wait_for_url(f"**/runs/flow-run/{flow_run_id}**", timeout=30_000)


# ---------------------------------------------------------------------------- what prefect deploy made


def test_every_deployment_is_on_its_pool_with_an_inactive_weekly_schedule_and_one_run_at_a_time(stack):
    for name in CPU_DEPLOYMENTS | GPU_DEPLOYMENTS:
        found = deployment(name)
        assert found.work_pool_name == ("gpu" if name in GPU_DEPLOYMENTS else "cpu"), name
        assert [(s.schedule.cron, s.active) for s in found.schedules] == [("0 3 * * 1", False)], name
        assert found.global_concurrency_limit is not None and found.global_concurrency_limit.limit == 1, name
        assert found.concurrency_options.collision_strategy.value == "ENQUEUE", name
        assert found.entrypoint == f"flows/{name.split('/')[0]}.py:{name.split('/')[0]}_flow", name


def test_gpu_deployments_ask_the_gpu_pool_for_a_gpu_with_bf16_and_bigger_batches(stack):
    found = deployment("both/both-gpu")
    assert found.job_variables["gpu_count"] == 1
    assert found.parameters["config"]["train"] == {"precision": "bf16", "batch_size": 64}
    with get_client(sync_client=True) as client:
        pool = client.read_work_pool("gpu")
    assert pool.type == "kubernetes"
    container = pool.base_job_template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    variables = pool.base_job_template["variables"]["properties"]
    assert variables["tolerations"]["default"][0]["key"] == "nvidia.com/gpu"
    assert variables["node_selector"]["default"] == {"nvidia.com/gpu.present": "true"}


def test_run_form_schema_has_every_config_field_with_its_description(stack):
    schema = deployment("both/both-cpu").parameter_openapi_schema
    definitions = schema["definitions"]
    for section in ("DataConfig", "TokenizerConfig", "ModelConfig", "TrainConfig", "EvalConfig", "RegistryConfig"):
        for field, spec in definitions[section]["properties"].items():
            assert spec.get("description"), f"{section}.{field} has no description"
            assert "default" in spec, f"{section}.{field} has no default"
    assert definitions["TrainConfig"]["properties"]["learning_rate"]["default"] == 0.001


# ---------------------------------------------------------------------------- runs


def test_run_triggered_through_the_api_as_the_ui_does_registers_a_version(stack):
    parameters = stack.tiny_parameters("train.learning_rate=0.002", "registry.clm_model_name=api-clm")
    with get_client(sync_client=True) as client:
        run = client.create_flow_run_from_deployment(deployment("clm/clm-cpu").id, parameters=parameters)
    finished = wait_for_final_state(run.id)
    assert finished.state.is_completed(), finished.state.message
    assert finished.parameters["config"]["train"]["learning_rate"] == 0.002

    registry = MlflowClient(stack.mlflow_url)
    (version,) = registry.search_model_versions("name = 'api-clm'")
    assert version.tags["prefect.flow_run_id"] == str(run.id)
    assert float(version.tags["perplexity"]) > 1
    assert registry.get_run(version.run_id).data.params["train.learning_rate"] == "0.002"

    # The same deployment, config and data again (what a schedule does weekly): every stage is
    # Cached, nothing trains, and no version is added.
    with get_client(sync_client=True) as client:
        again = client.create_flow_run_from_deployment(deployment("clm/clm-cpu").id, parameters=parameters)
    assert wait_for_final_state(again.id).state.is_completed()
    states = task_states(again.id, runs=ONE_MODEL_TASK_RUNS)
    assert sum(states.values(), []) == ["Cached"] * ONE_MODEL_TASK_RUNS  # the seven stages of one model, all hits
    assert len(registry.search_model_versions("name = 'api-clm'")) == 1


def chromium_or_skip() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is missing in CI: .ci/run must install Debian's chromium package")
        pytest.skip("SKIPPED LOUDLY: no Chromium here (apt-get install chromium) -- the browser test did not run")
    return path


def test_custom_run_started_from_the_prefect_ui_form_completes(stack):
    from playwright.sync_api import expect, sync_playwright

    chromium = chromium_or_skip()
    # The deployment's defaults become the form's values: tiny, so the run takes seconds.
    target = deployment("mlm/mlm-cpu")
    with get_client(sync_client=True) as client:
        from prefect.client.schemas.actions import DeploymentUpdate

        client.update_deployment(
            target.id, DeploymentUpdate(parameters=stack.tiny_parameters("registry.mlm_model_name=ui-mlm"))
        )

    TEST_ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=chromium,  # Debian's chromium: Playwright never downloads a browser here
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--no-first-run"],
        )  # fmt: skip
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{stack.prefect_url}/deployments")
            page.get_by_text("mlm-cpu", exact=True).click()
            run_button = page.get_by_role("button", name="Run", exact=True)
            expect(run_button).to_be_visible(timeout=30_000)
            page.screenshot(path=str(TEST_ARTIFACTS / "prefect-ui-deployment.png"))
            run_button.click()
            page.get_by_text("Custom run").click()

            field = page.get_by_text("Learning Rate (Optional)", exact=True)
            # The field's own container (class token, not the __header/__label elements inside it).
            container = (
                "ancestor::div[contains(concat(' ', normalize-space(@class), ' '), ' schema-form-property ')][1]"
            )
            learning_rate = field.locator(f"xpath={container}//input")
            expect(learning_rate).to_have_value("0.001", timeout=30_000)  # the deployment's default, shown
            learning_rate.fill("0.003")
            expect(learning_rate).to_have_value("0.003")
            page.screenshot(path=str(TEST_ARTIFACTS / "prefect-ui-custom-run-form.png"))
            runs_before = deployment_run_ids(target.id)
            page.get_by_role("button", name="Submit").click()

            # The form page is .../deployment/<id>/run: only leaving it proves the UI created the run.
            page.wait_for_url(lambda url: url.split("?")[0].rstrip("/").endswith(str(target.id)), timeout=60_000)
            flow_run_id = the_one_new_run(target.id, runs_before)
            # Open it from the deployment's Runs tab, as a user would. That tab leaves out Scheduled
            # runs and refreshes on its own clock, so on a loaded machine the row can take a while:
            # the user reloads until it is there.
            open_from_runs_tab(page, flow_run_id)
            # The run's state badge: exact text, so log lines like "... completed successfully" don't count.
            expect(page.get_by_text("Completed", exact=True).first).to_be_visible(timeout=600_000)
            page.screenshot(path=str(TEST_ARTIFACTS / "prefect-ui-run-completed.png"))

            # The reviewer's side: the new version in MLflow's model registry UI.
            page.goto(f"{stack.mlflow_url}/#/models/ui-mlm/versions/1")
            expect(page.get_by_text("Version 1").first).to_be_visible(timeout=60_000)
            expect(page.get_by_text(flow_run_id).first).to_be_visible()  # the prefect.flow_run_id tag
            # The model card, rendered from the description: what a reviewer reads first.
            expect(page.get_by_text("Sample outputs").first).to_be_visible(timeout=30_000)
            expect(page.get_by_text("Alias: champion.").first).to_be_visible()
            page.screenshot(path=str(TEST_ARTIFACTS / "mlflow-ui-model-version.png"), full_page=True)
        finally:
            browser.close()

    finished = wait_for_final_state(flow_run_id)
    assert finished.state.is_completed()
    assert finished.parameters["config"]["train"]["learning_rate"] == 0.003, "the form's value reached the run"
    (version,) = MlflowClient(stack.mlflow_url).search_model_versions("name = 'ui-mlm'")
    assert version.tags["prefect.flow_run_id"] == flow_run_id
