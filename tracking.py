"""wandb through accelerate's trackers, falling back to offline logging when the account or network is missing."""
from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf


def start_tracking(accelerator, cfg, folder: Path) -> None:
    """Start the wandb run on the main process (accelerate keeps the other processes silent)."""
    if not cfg.TRAIN.wandb.use:
        return
    import wandb

    settings = cfg.TRAIN.wandb
    kwargs = {"entity": settings.entity, "name": f"{cfg.DEFAULT.exp_name}-seed{cfg.DEFAULT.seed}", "dir": str(folder),
              "mode": settings.mode, "settings": wandb.Settings(init_timeout=60)}
    config = OmegaConf.to_container(cfg)
    try:
        accelerator.init_trackers(settings.project_name, config=config, init_kwargs={"wandb": kwargs})
    except (wandb.errors.Error, TimeoutError, OSError) as error:
        accelerator.print(f"wandb: online logging failed ({str(error).splitlines()[0]}); logging offline to "
                          f"{folder / 'wandb'} instead, upload it later with `wandb sync {folder / 'wandb'}/offline-run-*`")
        kwargs["mode"] = "offline"
        # init_trackers appended the failed tracker before starting it, and starts every listed tracker: drop it
        accelerator.trackers.clear()
        accelerator.init_trackers(settings.project_name, config=config, init_kwargs={"wandb": kwargs})
