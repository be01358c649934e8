"""What the registry holds, read for certain: every version of some models, with its tags (`lmpipe gc` keeps what
they need). A registry that cannot be read for sure raises; it never reads as "no versions"."""

from __future__ import annotations


def registered_versions(uri: str, names: set[str]) -> dict[str, dict[int, dict[str, str]]]:
    """Every version of each named model, with its tags. Raises when the registry cannot be read for sure:
    a SQLite store that is not there (the default store is in the working directory: gc run from another
    directory must not read "no versions"), or a server that does not answer within seconds."""
    from mlflow import MlflowClient

    from lmpipe.registry.readiness import bound_http_retries, require_server_answers, sqlite_path

    bound_http_retries()
    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise FileNotFoundError(f"no MLflow store at {db}: set registry.tracking_uri to the runs' store")
    if uri.startswith(("http://", "https://")):
        require_server_answers(uri)
    client = MlflowClient(uri)
    found: dict[str, dict[int, dict[str, str]]] = {}
    for name in sorted(names):
        versions, token = {}, None
        while True:
            page = client.search_model_versions(f"name = '{name}'", page_token=token)
            versions.update({int(v.version): dict(v.tags) for v in page})
            token = page.token
            if not token:
                break
        found[name] = versions
    return found
