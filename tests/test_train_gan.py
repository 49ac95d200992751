"""`latcomp train-gan` on a tiny configuration: outputs, resume exactness, the command line."""

from __future__ import annotations

import json
import subprocess
import sys

import torch

from latcomp.nets import load
from latcomp.nets.discriminator import Discriminator
from latcomp.training.gan import GANConfig, GANTrainer


def tiny_config(out, **changes) -> GANConfig:
    values = dict(out=str(out), size=32, steps=4, batch_size=4, style_dim=16, n_mlp=1, channel_base=128,
                  channel_max=16, dataset_size=12, d_reg_every=2, sample_every=4, checkpoint_every=2,
                  log_every=1)
    return GANConfig(**{**values, **changes})


def test_discriminator_shapes():
    discriminator = Discriminator(size=32, channels={4: 16, 8: 16, 16: 8, 32: 4})
    assert discriminator(torch.randn(6, 3, 32, 32)).shape == (6, 1)


def test_run_writes_checkpoint_generator_samples_and_log(tmp_path):
    trainer = GANTrainer(tiny_config(tmp_path))
    losses = trainer.fit(quiet=True)
    assert set(losses) >= {"d", "g"} and all(torch.isfinite(torch.tensor(v)) for v in losses.values())
    assert (tmp_path / "checkpoint.pt").is_file()
    assert (tmp_path / "samples" / "step0000004.png").is_file()
    generator = load(tmp_path / "generator.safetensors")
    assert generator.resolution == 32 and generator.latent_shape == (8, 16)
    torch.testing.assert_close(generator.w_avg, trainer.w_avg)  # the tracked mean w travels with G


def test_resume_continues_exactly(tmp_path):
    straight = GANTrainer(tiny_config(tmp_path / "straight"))
    straight.fit(quiet=True)

    first = GANTrainer(tiny_config(tmp_path / "split", steps=2))
    first.fit(quiet=True)
    resumed = GANTrainer(tiny_config(tmp_path / "split"), resume=True)
    assert resumed.step == 2
    resumed.fit(quiet=True)

    for name in ("generator", "discriminator", "ema"):
        ours, theirs = getattr(resumed, name).state_dict(), getattr(straight, name).state_dict()
        for key in theirs:
            assert torch.equal(ours[key], theirs[key]), f"{name}.{key} differs after resume"


def test_command_line_trains_and_logs(tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "latcomp", "train-gan", "--out", str(out), "--size", "32",
               "--steps", "2", "--batch-size", "2", "--style-dim", "16", "--n-mlp", "1",
               "--channel-base", "128", "--channel-max", "16", "--dataset-size", "4",
               "--checkpoint-every", "1", "--threads", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert records[0].get("kind") == "config" or any(r.get("kind") == "config" for r in records)
    assert (out / "generator.safetensors").is_file()
    help_text = subprocess.run([sys.executable, "-m", "latcomp", "train-gan", "--help"], capture_output=True,
                               text=True, timeout=120, check=True).stdout
    assert "--resume" in help_text and "--r1-gamma" in help_text
