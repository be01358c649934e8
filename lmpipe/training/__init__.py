"""Training, in two processes. The launcher runs in the flow process: it writes the job, starts
`python -m lmpipe.training.worker job.json` and relays its progress. The worker is that child: it
builds the model and trains it with the Hugging Face Trainer (loop, trainer, checkpoints). A
crash or an out-of-memory kill takes down only the child, never the Prefect worker."""
