"""Model review in a real `mlflow server` (SQLite backend, local artifact root, loopback).

One registry history is built once per module by real flow runs of the tiny config:

    v1  8 steps                         -> champion (first version)
    v2  2 steps                         -> challenger (worse)
    v3  40 steps                        -> champion (better)
    v4  8 steps, another eval set       -> the champion v3 is re-evaluated on it; v4 is challenger

Each test then checks one claim of the review contract against that registry, loading models
independently of the pipeline's own code where it compares outputs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import pytest
from mlflow import MlflowClient
from pipeline_probe import tiny_config
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

from flows.clm import clm_flow
from flows.mlm import mlm_flow
from lmpipe.cli.services import free_port, start_mlflow_server
from lmpipe.evaluation.perplexity import evaluate_models
from lmpipe.registry import register as register_task
from lmpipe.registry import review as registry_commands
from lmpipe.store.keys import artifact_path
from lmpipe.store.manifest import read_manifest

pytestmark = pytest.mark.integration

CLM = "eli5-clm"
LINEAGE_TAGS = {
    "data.fingerprint",
    "data.download",
    "data.source",
    "data.revision",
    "data.block_size",
    "data.train_blocks",
    "data.test_blocks",
    "data.train_tokens",
    "data.test_tokens",
    "tokenizer.hash",
    "tokenizer.source",
    "model.base",
    "model.base_config",
    "code.git_commit",
    "prefect.flow_run_id",
    "prefect.flow_run_url",
    "eval.set",
}


class History:
    """The registry the module's flow runs built: server URI, workspace, and each run's registration."""

    def __init__(self, uri: str, workspace: Path) -> None:
        self.uri, self.workspace = uri, workspace
        self.client = MlflowClient(uri)
        self.registrations: dict[str, dict] = {}
        self.flow_runs: dict[str, str] = {}

    def config(self, *overrides: str):
        return tiny_config(self.workspace, f"registry.tracking_uri={self.uri}", *overrides)

    def run(self, label: str, flow=clm_flow, *overrides: str) -> dict:
        state = flow(self.config(*overrides), return_state=True)
        assert state.is_completed(), state.message
        (registration_dir,) = state.result()
        registration = json.loads((Path(registration_dir) / "registration.json").read_text())
        registration["dir"] = registration_dir
        self.registrations[label] = registration
        self.flow_runs[label] = str(state.state_details.flow_run_id)
        return registration

    def version(self, number: int, name: str = CLM):
        return self.client.get_model_version(name, str(number))


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    workspace = tmp_path_factory.mktemp("review")
    port = free_port()
    server = start_mlflow_server(
        f"sqlite:///{workspace / 'server.db'}", workspace / "server-artifacts", port, workspace
    )
    history = History(f"http://127.0.0.1:{port}", workspace)
    try:
        history.run("first", clm_flow, "train.max_steps=8")
        history.run("worse", clm_flow, "train.max_steps=2")
        history.run("better", clm_flow, "train.max_steps=40")
        history.run("other_set", clm_flow, "train.max_steps=8", "eval.max_blocks=16")
        history.run("mlm", mlm_flow)
        yield history
    finally:
        server.stop()


def test_first_registration_becomes_champion(history):
    first = history.registrations["first"]
    assert (first["version"], first["alias"]) == (1, "champion")
    assert "no champion yet" in history.version(1).description


def test_a_worse_model_becomes_challenger_with_the_reason_in_its_description(history):
    worse, first = history.registrations["worse"], history.registrations["first"]
    assert worse["perplexity"] > first["perplexity"]
    assert (worse["version"], worse["alias"]) == (2, "challenger")
    description = history.version(2).description
    assert f"does not beat champion v1's {first['perplexity']:.2f}" in description
    assert history.version(2).tags["champion.perplexity"] == f"{first['perplexity']:.4f}"


def test_a_better_model_takes_champion(history):
    better, first = history.registrations["better"], history.registrations["first"]
    assert better["perplexity"] < first["perplexity"] * (1 - 0.01)
    assert (better["version"], better["alias"]) == (3, "champion")
    assert f"beats champion v1's {first['perplexity']:.2f}" in history.version(3).description
    assert history.client.get_model_version_by_alias(CLM, "champion").version == "3"


def test_another_eval_set_reevaluates_the_champion_before_comparing(history):
    other, better = history.registrations["other_set"], history.registrations["better"]
    assert other["eval_set"] != better["eval_set"]
    tags = history.version(4).tags
    assert (tags["champion.version"], tags["champion.reevaluated"]) == ("3", "true")

    # The champion's number must be its perplexity on v4's set, not the one it was registered with:
    # evaluate v3's own artifact on that set, independently of the registry.
    v3_model_dir = upstream(better["dir"], "model")
    blocks_dir = upstream(upstream(other["dir"], "eval"), "blocks")
    expected = evaluate_models("clm", v3_model_dir, blocks_dir, history.config("eval.max_blocks=16"))["perplexity"]
    assert float(tags["champion.perplexity"]) == pytest.approx(expected, rel=1e-4)
    assert float(tags["champion.perplexity"]) != pytest.approx(better["perplexity"], rel=1e-4)
    assert "re-evaluated on this set" in history.version(4).description
    assert other["alias"] == "challenger"  # 8 steps does not beat 40 steps
    assert history.client.get_model_version_by_alias(CLM, "champion").version == "3"


def test_refuse_mode_never_compares_numbers_from_different_sets(history):
    name = "refuse-check"
    first = history.config(f"registry.clm_model_name={name}")
    assert register_task.register_model("clm", *_artifacts_of(history, "first"), first)["alias"] == "champion"
    refusing = history.config(f"registry.clm_model_name={name}", "registry.on_other_eval_set=refuse")
    refused = register_task.register_model("clm", *_artifacts_of(history, "other_set"), refusing)
    version = history.client.get_model_version(name, str(refused["version"]))
    assert refused["alias"] == "challenger"
    assert "never compared" in version.description and "registry.on_other_eval_set=refuse" in version.description
    assert "champion.perplexity" not in version.tags  # nothing was compared
    assert history.client.get_model_version_by_alias(name, "champion").version == "1"


def test_every_version_carries_its_lineage_and_the_run_its_inputs_and_curves(history):
    first = history.registrations["first"]
    version = history.version(1)
    assert LINEAGE_TAGS <= set(version.tags), LINEAGE_TAGS - set(version.tags)
    assert version.tags["prefect.flow_run_id"] == history.flow_runs["first"]
    assert version.tags["prefect.flow_run_url"].endswith(f"/runs/flow-run/{history.flow_runs['first']}")
    assert version.tags["model.base"] == "from scratch"
    assert int(version.tags["data.train_blocks"]) > 0 and int(version.tags["data.block_size"]) == 32
    assert len(version.tags["code.git_commit"].removesuffix("+dirty")) == 40

    run = history.client.get_run(first["run_id"])
    contexts = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i.dataset.name
        for i in run.inputs.dataset_inputs
    }
    assert contexts == {"training": "train-blocks", "evaluation": "test-blocks"}
    eval_curve = history.client.get_metric_history(first["run_id"], "eval/loss")
    assert [point.step for point in sorted(eval_curve, key=lambda p: p.step)] == [0, 8]
    assert len(history.client.get_metric_history(first["run_id"], "train/loss")) == 2  # logging_steps 4 of 8


def test_model_card_shows_real_generations_of_the_registered_model(history):
    from transformers import set_seed

    from lmpipe.evaluation.samples import generation_kwargs

    config = history.config()
    mlflow.set_tracking_uri(history.uri)
    generator = mlflow.transformers.load_model(f"models:/{CLM}/3")  # what a reviewer would load
    run_id = history.registrations["better"]["run_id"]
    card_text = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="model_card.md")).read_text()
    samples = json.loads(
        Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path="samples.json")).read_text()
    )
    description = history.version(3).description
    assert [sample["prompt"] for sample in samples] == config.card.clm_prompts  # they fit the 64 positions
    for sample in samples:
        set_seed(config.card.seed)
        kwargs = generation_kwargs(generator.tokenizer, sample["max_new_tokens"])
        text = generator(sample["prompt"], **kwargs)[0]["generated_text"]
        assert text.startswith(sample["prompt"]) and len(text) > len(sample["prompt"])
        assert f"```text\n{text}\n```" in card_text
        assert f"```text\n{text}\n```" in description
    assert "| this version (v3) |" in description and "| base model, before training |" in description
    assert "## How to load" in description and 'load_model("models:/eli5-clm/3")' in description


def test_model_card_shows_the_mlm_top_3_fillings(history):
    config = history.config()
    registration = history.registrations["mlm"]
    mlflow.set_tracking_uri(history.uri)
    filler = mlflow.transformers.load_model(f"models:/eli5-mlm/{registration['version']}")
    description = history.client.get_model_version("eli5-mlm", str(registration["version"])).description
    assert "| The Milky Way is a &lt;mask> galaxy. |" in description  # escaped, or Markdown eats it as HTML
    for sentence in config.card.mlm_sentences:
        top3 = filler(sentence.replace("<mask>", filler.tokenizer.mask_token), top_k=3)
        (row,) = [line for line in description.splitlines() if line.startswith(f"| {sentence.replace('<', '&lt;')} |")]
        expected = ", ".join(f'"{p["token_str"]}" ({p["score"]:.3f})' for p in top3)
        assert row.endswith(f"| {expected} |"), (row, expected)


def test_predict_through_the_champion_alias_matches_the_registered_model(history):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    uri = registry_commands.model_uri(CLM, None, None, history.uri)  # no version or alias given: the champion
    assert uri == registry_commands.model_uri(CLM, None, "champion", history.uri) == f"models:/{CLM}@champion"
    predicted = registry_commands.predict(uri, "The json module", history.uri, max_new_tokens=12)

    # Independently: the champion's own training artifact, greedy decoding with plain transformers.
    model_dir = str(upstream(history.registrations["better"]["dir"], "model"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    ids = tokenizer("The json module", return_tensors="pt", add_special_tokens=False).input_ids
    output = model.generate(ids, max_new_tokens=12, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    assert predicted == [{"generated_text": tokenizer.decode(output[0], skip_special_tokens=True)}]


def test_a_retried_register_is_a_no_op(history):
    better = history.registrations["better"]
    before = history.client.search_model_versions(f"name = '{CLM}'")

    again = register_task.register_model("clm", *_artifacts_of(history, "better"), history.config())
    assert again["version"] == better["version"] and again["run_id"] == better["run_id"]
    assert len(history.client.search_model_versions(f"name = '{CLM}'")) == len(before)
    key = history.version(3).tags[register_task.KEY_TAG]
    runs = history.client.search_runs([better["experiment_id"]], f"tags.`{register_task.KEY_TAG}` = '{key}'")
    assert len(runs) == 1


def upstream(artifact: str | Path, name: str) -> Path:
    """The artifact that `artifact`'s manifest names as its input `name` (by reference, under the same root)."""
    return artifact_path(Path(artifact).parent.parent, read_manifest(artifact)["inputs"][name])


def _artifacts_of(history, label: str):
    registration = history.registrations[label]["dir"]
    return upstream(registration, "model"), upstream(registration, "eval")


def register_failing_at(monkeypatch, owner, call: str, model_dir: Path, eval_dir: Path, config) -> None:
    """One register attempt that dies at `owner.call`, as when the tracking server goes away there."""

    def registry_went_away(*args, **kwargs):
        raise ConnectionError("registry went away")

    monkeypatch.setattr(owner, call, registry_went_away)
    with pytest.raises(ConnectionError):
        register_task.register_model("clm", model_dir, eval_dir, config)
    monkeypatch.undo()


def test_a_version_never_created_is_registered_from_the_logged_run_on_retry(history, monkeypatch):
    name = "halfway-unregistered"
    # Its own experiment: no earlier run holds these artifacts, so the first attempt logs one.
    config = history.config(f"registry.clm_model_name={name}", "registry.experiment=halfway")
    model_dir, eval_dir = _artifacts_of(history, "first")

    register_failing_at(monkeypatch, MlflowClient, "create_model_version", model_dir, eval_dir, config)
    key = register_task.registration_key(model_dir, eval_dir)
    experiment = history.client.get_experiment_by_name(config.registry.experiment).experiment_id
    (logged,) = history.client.search_runs([experiment], f"tags.`{register_task.KEY_TAG}` = '{key}'")
    assert register_task.MODEL_URI_TAG in logged.data.tags
    assert history.client.search_model_versions(f"name = '{name}'") == []

    completed = register_task.register_model("clm", model_dir, eval_dir, config)
    assert completed["run_id"] == logged.info.run_id, "the logged run is registered, not logged again"
    assert [v.version for v in history.client.search_model_versions(f"name = '{name}'")] == ["1"]
    assert len(history.client.search_runs([experiment], f"tags.`{register_task.KEY_TAG}` = '{key}'")) == 1


def test_a_version_registered_halfway_is_completed_not_duplicated(history, monkeypatch):
    name = "halfway-aliasless"
    config = history.config(f"registry.clm_model_name={name}")
    model_dir, eval_dir = _artifacts_of(history, "worse")

    # register sets the alias through MlflowClient's registry client (lmpipe.registry.register.registry_writer_of).
    from mlflow.tracking._model_registry.client import ModelRegistryClient

    register_failing_at(monkeypatch, ModelRegistryClient, "set_registered_model_alias", model_dir, eval_dir, config)
    (half,) = history.client.search_model_versions(f"name = '{name}'")
    assert register_task.COMPLETE_TAG not in half.tags

    completed = register_task.register_model("clm", model_dir, eval_dir, config)
    (version,) = history.client.search_model_versions(f"name = '{name}'")
    assert completed["version"] == int(version.version) == 1
    assert version.tags[register_task.COMPLETE_TAG] == "true"
    assert history.client.get_model_version_by_alias(name, "champion").version == "1"
    assert "first version of this model" in history.client.get_model_version(name, "1").description


def test_a_version_numbered_past_a_deleted_one_is_described_by_its_own_number(history):
    # The card is written for the number MLflow will give before the version exists; MLflow never reuses the
    # number of a deleted version, so here that guess is wrong and the description must be corrected.
    name = "renumbered"
    config = history.config(f"registry.clm_model_name={name}")
    first = register_task.register_model("clm", *_artifacts_of(history, "first"), config)
    history.client.delete_model_version(name, str(first["version"]))
    again = register_task.register_model("clm", *_artifacts_of(history, "worse"), config)
    assert (first["version"], again["version"]) == (1, 2)
    version = history.client.get_model_version(name, "2")
    assert version.description.startswith(f"# {name} v2\n") and f'load_model("models:/{name}/2")' in version.description
    assert version.tags[register_task.COMPLETE_TAG] == "true"


def test_promotion_off_registers_without_an_alias(history):
    name = "register-only"
    config = history.config(f"registry.clm_model_name={name}", "registry.promote=false")
    registration = register_task.register_model("clm", *_artifacts_of(history, "better"), config)
    assert registration["alias"] == "none"
    assert history.client.get_registered_model(name).aliases == {}
    assert "promotion is off" in history.client.get_model_version(name, "1").description


def test_each_flow_run_publishes_a_registration_table_and_training_progress(history):
    flow_run_id = history.flow_runs["worse"]
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
        )
    by_type = {}
    for artifact in artifacts:
        by_type.setdefault(artifact.type, []).append(artifact)
    (table,) = by_type["table"]
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert rows == [
        {
            "model": CLM,
            "version": 2,
            "alias": "challenger",
            "base perplexity": round(history.registrations["worse"]["base_perplexity"], 2),
            "perplexity": round(history.registrations["worse"]["perplexity"], 2),
            "MLflow run": history.registrations["worse"]["run_url"],
            "model version": f"{history.uri}/#/models/{CLM}/versions/2",
        }
    ]
    (progress,) = by_type["progress"]
    assert float(progress.data) == 100.0


def test_credentials_in_the_tracking_uri_never_reach_mlflow_or_the_logs(history, caplog):
    # The loopback server has no auth: it ignores the credentials, so registering works and we can look.
    secret_uri = history.uri.replace("http://", "http://reviewer:s3cr3t-pw@")
    # Its own experiment, so that a new run is logged (the artifacts' earlier run would be reused).
    config = history.config(
        f"registry.tracking_uri={secret_uri}",
        "registry.clm_model_name=secret-check",
        "registry.experiment=secret-check",
    )
    with caplog.at_level(logging.DEBUG):
        registration = register_task.register_model(
            "clm", *_artifacts_of(history, "first"), config, log=logging.getLogger("t")
        )
    run = history.client.get_run(registration["run_id"])
    version = history.client.get_model_version("secret-check", str(registration["version"]))
    recorded = [
        *run.data.params.values(), *run.data.tags.values(), *version.tags.values(), version.description,
        json.dumps(registration), *(record.getMessage() for record in caplog.records),
    ]  # fmt: skip
    mlflow.set_tracking_uri(history.uri)
    recorded.append(
        Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="model_card.md")).read_text()
    )
    assert run.data.params["registry.tracking_uri"] == history.uri.replace("http://", "http://***@")
    leaks = [text for text in recorded if "s3cr3t-pw" in text or "reviewer:" in text]
    assert leaks == []
