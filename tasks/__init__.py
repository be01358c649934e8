"""The eight pipeline stages, one per module; each module's logic is in plain typed functions."""
