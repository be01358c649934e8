"""Models and what they are trained on: the base model an objective starts from, the batches its
collator makes from blocks (labels included), and the token-weighted loss both training and
evaluation report. Runs in the training process and in evaluate."""
