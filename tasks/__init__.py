"""The eight pipeline stages as Prefect tasks, one module per stage (train-clm and train-mlm are one stage,
in train.py): the stage's cache key and a thin @task around a function of the lmpipe package. No task
imports another."""
