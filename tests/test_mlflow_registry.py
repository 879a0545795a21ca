"""MLflow's model registry as the source of models, against a local MLflow store: an alias
set in MLflow is followed by the model provider (the UDF agent's and the API's)."""

from __future__ import annotations

import pytest
from agent_helpers import Client, close_clients, register_tiny, req, row_point
from conftest import WAIT, eventually, require_module

from models.errors import ModelNotFound, RegistryError
from models.registry import Registry
from udf_agent.server import AgentConfig, AgentServer

pytestmark = [
    pytest.mark.slow,  # MLflow's store and imports take seconds
    # MLflow's own dependencies (SQLAlchemy) warn about APIs MLflow still uses
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
]


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    close_clients()


@pytest.fixture
def mlflow_store(tmp_path):
    require_module("mlflow")
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    exp = client.create_experiment("creditcard", artifact_location=(tmp_path / "art").as_uri())
    return uri, client, exp


def _publish(client, exp, reg: Registry, name: str, version: str) -> str:
    """What the training job does: the version's directory as run artifacts, the run
    tagged with the project version, a model version in MLflow's registry."""
    from models.mlflow_registry import REGISTRY_ARTIFACTS, VERSION_TAG

    run = client.create_run(exp, tags={VERSION_TAG: version})
    client.log_artifacts(run.info.run_id, str(reg.root / name / version), REGISTRY_ARTIFACTS)
    client.set_terminated(run.info.run_id)
    try:
        client.create_registered_model(name)
    except Exception:  # already there
        pass
    mv = client.create_model_version(
        name, source=f"runs:/{run.info.run_id}/{REGISTRY_ARTIFACTS}", run_id=run.info.run_id
    )
    return mv.version


def test_aliases_set_in_mlflow_are_followed_by_the_agent(tmp_path, mlflow_store):
    from models.mlflow_registry import MlflowRegistry

    uri, client, exp = mlflow_store
    staging = Registry(tmp_path / "trained", signing_key=None)
    register_tiny(staging, alias=None)
    register_tiny(staging, alias=None, seed=5)
    v1 = _publish(client, exp, staging, "creditcard", "1")
    v2 = _publish(client, exp, staging, "creditcard", "2")
    client.set_registered_model_alias("creditcard", "champion", v1)
    reg = MlflowRegistry(uri, tmp_path / "cache", poll_interval=0.0, signing_key=None)
    assert reg.versions("creditcard") == ["1", "2"]
    assert reg.aliases("creditcard") == {"champion": "1"}
    card = reg.card("creditcard", "champion")
    assert (
        card.version == "1" and (tmp_path / "cache" / "creditcard" / "1" / "model.json").is_file()
    )
    with pytest.raises(ModelNotFound):
        reg.card("unknown", "champion")
    with pytest.raises(RegistryError, match="registered in MLflow"):
        reg.register("x", object(), features=["a"], threshold=0.5)

    srv = AgentServer(
        AgentConfig(socket_path=tmp_path / "u.sock", registry=reg.root, reload_interval=0.0),
        registry=reg,
    ).start()
    try:
        c = Client(tmp_path / "u.sock", timeout=WAIT)
        assert c.init(
            {"model": "creditcard", "version": "champion", "maxDelay": ("duration", 0)}
        ).success
        c.send(req(point=row_point([0.0] * 30, t=1, txn="a")))
        assert c.recv_points(1)[0].tags["model_version"] == "1"
        client.set_registered_model_alias("creditcard", "champion", v2)  # in MLflow only
        t = [1]

        def scored_by_v2():
            t[0] += 1
            c.send(req(point=row_point([0.0] * 30, t=t[0], txn=f"p{t[0]}")))
            return c.recv_points(1)[0].tags["model_version"] == "2"

        eventually(
            scored_by_v2, what="the agent to follow the alias moved in MLflow", interval=0.05
        )
    finally:
        srv.stop()
    # promote through the registry moves the MLflow alias
    assert reg.promote("creditcard", "1", "champion") == {"champion": "1"}
    assert client.get_model_version_by_alias("creditcard", "champion").version == v1
    # the REST API follows MLflow's alias the same way
    from api.app import create_app
    from api.config import ApiConfig

    app = create_app(
        ApiConfig(
            registry=tmp_path / "api-cache",
            model="creditcard",
            alias="champion",
            mlflow_tracking_uri=uri,
            reload_interval=0,
        )
    )
    from models.contract import FEATURES

    r = app.test_client().post("/v1/predict", json=dict.fromkeys(FEATURES, 0.0))
    assert r.status_code == 200 and r.get_json()["model_version"] == "1"
    app.extensions["tick_anomaly_api"].service.close()


def test_a_version_logged_without_the_registry_files_is_refused(tmp_path, mlflow_store):
    from models.mlflow_registry import VERSION_TAG, MlflowRegistry

    uri, client, exp = mlflow_store
    run = client.create_run(exp, tags={VERSION_TAG: "1"})
    client.create_registered_model("bare")
    mv = client.create_model_version(
        "bare", source=f"runs:/{run.info.run_id}/x", run_id=run.info.run_id
    )
    client.set_registered_model_alias("bare", "champion", mv.version)
    reg = MlflowRegistry(uri, tmp_path / "cache", poll_interval=0.0, signing_key=None)
    with pytest.raises(RegistryError):
        reg.card("bare", "champion")
