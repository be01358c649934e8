"""The eight pipeline stages as Prefect tasks, one module each: the stage's cache key and a thin @task
around a function of the lmpipe package. No task imports another."""
