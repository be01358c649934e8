"""Handing a model to review in the MLflow model registry: the run, the version, its lineage, card and
alias, and the commands reviewers use. Runs in the flow process (the register stage) and the CLI."""
