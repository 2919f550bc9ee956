"""Every shipped config loads, validates and builds its model (shapes only: meta device)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from claver.engine import data as engine_data
from claver.engine.config import load_config
from claver.engine.train import accumulation_steps

CONFIGS = sorted(p for p in (Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml")
                 if p.name != "base.yaml")


def test_configs_are_shipped():
    assert len(CONFIGS) >= 20
    names = {p.stem for p in CONFIGS}
    for expected in ["claver_b32_8f_kmt", "claver_b16_8f_kmct", "claver_b16_32f_kmt",
                     "claver_l14_8f_kmt", "claver_l14-336_8f_kmt", "hmdb51_b16_32f",
                     "ucf101_b16_32f", "k400_b16_32f", "k400_b16_8f_transf"]:
        assert expected in names


@pytest.mark.parametrize("path", CONFIGS, ids=[f"{p.parent.name}/{p.stem}" for p in CONFIGS])
def test_config_builds(path):
    cfg = load_config(path, ["MODEL.PRETRAINED="])  # no download in tests
    assert cfg.OUTPUT.startswith("runs/")
    assert accumulation_steps(cfg, 1) >= 1 and accumulation_steps(cfg, 8) >= 1
    with torch.device("meta"):
        model = engine_data.build_model(cfg)  # also checks DATA.INPUT_SIZE vs the model
    assert model.config.num_frames == cfg.DATA.NUM_FRAMES
    if model.config.arch == "claver":
        assert model.config.mask == cfg.MODEL.MASK
    assert len(engine_data.templates(cfg)) >= 1
