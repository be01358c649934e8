"""The artifact store: content-addressed directories, their manifests and locks, and Arrow streaming.

Runs wherever a stage runs. Plain Python and pyarrow only: no Prefect, no Hugging Face, no torch
(an import-linter contract holds it to that), so it can be reasoned about, and tested, on its own.
"""
