"""Shared building blocks for the language-model pipeline: config, artifacts, devices, CLI."""
