"""The language-model pipeline's code, one package per concern (README, "Layout", maps the tree).

tasks/ and flows/ wrap it for Prefect; nothing in here imports them (import-linter contracts in
pyproject.toml hold the layering).
"""
