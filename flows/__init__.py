"""Prefect flows: each one only wires the tasks in tasks/."""
