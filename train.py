"""Entry point: ``python train.py prior=lods_lora prompt="a red cube"`` (see README.md)."""

import hydra
from omegaconf import DictConfig

import lods.config  # noqa: F401  (registers the config resolvers before Hydra reads conf/)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lods.training import objective_value, train

    metrics = train(cfg)
    return objective_value(cfg, metrics)


if __name__ == "__main__":
    main()
