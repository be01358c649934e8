"""The Prefect glue, in the flow process: how a stage's artifact becomes its cache key, which errors are
retried, what the Prefect UI shows, the work pools, and the temporary server a local run uses.
It decides when and where a stage runs, never what it writes."""
