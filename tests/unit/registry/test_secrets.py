"""lmpipe.registry.secrets: credentials in URIs never reach what the pipeline records."""

from __future__ import annotations

from lmpipe.registry.secrets import link, mask_secrets, mask_url, masked


def test_user_info_and_secret_query_values_are_masked():
    assert mask_url("https://alice:pw123@mlflow.example:5000/x?token=abc&run=1") == (
        "https://***@mlflow.example:5000/x?token=***&run=1"
    )
    assert mask_url("http://tok@host/") == "http://***@host/"
    assert mask_url("databricks://profile") == "databricks://profile"
    assert mask_url("sqlite:////tmp/mlflow.db") == "sqlite:////tmp/mlflow.db"


def test_links_drop_credentials_entirely():
    assert link("https://alice:pw123@mlflow.example/#/models?api_key=k") == "https://mlflow.example/#/models?api_key=k"
    assert link("https://alice:pw123@mlflow.example/x?api_key=k") == "https://mlflow.example/x?api_key=***"


def test_urls_inside_text_and_trees_are_masked():
    text = "connect to https://bob:hunter2@h:1/api then http://h2/?secret=s3"
    assert mask_secrets(text) == "connect to https://***@h:1/api then http://h2/?secret=***"
    tree = {"registry": {"tracking_uri": "https://u:p@h"}, "n": 3, "l": ["http://x:y@z"]}
    assert masked(tree) == {
        "registry": {"tracking_uri": "https://***@h"},
        "n": 3,
        "l": ["https://***@z".replace("https", "http")],
    }
