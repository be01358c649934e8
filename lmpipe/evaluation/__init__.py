"""What reviewers compare: perplexity of the trained and the base model on the held-out blocks, and the
model card's sample outputs. Runs in the flow process (the evaluate stage) and when register
re-evaluates a champion on a new evaluation set."""
