"""The data stages' work, run in the flow process: download, flatten, tokenize and group into blocks.

Shared by both objectives: one tokenized dataset per tokenizer and one blocks artifact per
tokenizer and block size, whichever model reads them.
"""
