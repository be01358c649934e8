"""The `clm` flow (defined in flows/single_model.py), at the entry point deployments use.

python flows/clm.py --config configs/default.yaml --set train.epochs=1
"""

from flows.single_model import clm_flow

__all__ = ["clm_flow"]

if __name__ == "__main__":
    from lmpipe.cli.main import run_from_script

    run_from_script("clm")
