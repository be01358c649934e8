"""The `mlm` flow (defined in flows/single_model.py), at the entry point deployments use.

python flows/mlm.py --config configs/default.yaml --set train.mlm_probability=0.2
"""

from flows.single_model import mlm_flow

__all__ = ["mlm_flow"]

if __name__ == "__main__":
    from lmpipe.cli.main import run_from_script

    run_from_script("mlm")
