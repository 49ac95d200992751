"""`latcomp train` under torchrun: two CPU processes, gloo, DistributedDataParallel."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import torch

from latcomp.nets import StyleGAN2Generator, load, save


def test_two_process_gloo_run_trains_and_only_rank0_writes(tmp_path):
    torch.manual_seed(0)
    generator = StyleGAN2Generator(size=32, style_dim=32, n_mlp=2, channels={4: 16, 8: 16, 16: 8, 32: 8})
    generator_file = save(tmp_path / "G.safetensors", generator, latent_avg=generator.compute_w_avg(n=256))
    out = tmp_path / "run"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "latcomp", "train", "--generator", str(generator_file), "--out", str(out),
               "--steps", "3", "--batch-size", "2", "--val-every", "3", "--val-size", "2", "--log-every", "1",
               "--blocks", "1", "1", "--widths", "8", "16", "--threads", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, env=env, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    for name in ("checkpoint.pt", "best.pt", "regressor.safetensors", "samples/step0000003.png"):
        assert (out / name).is_file(), name
    assert load(out / "regressor.safetensors").latent_shape == (8, 32)
    records = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    configs = [r for r in records if r.get("kind") == "config"]
    assert len(configs) == 1 and configs[0]["world_size"] == 2  # rank 1 neither logs nor saves
    assert [r["step"] for r in records if r.get("kind") == "train"] == [1, 2, 3]
    assert result.stdout.count("done at step 3") == 1


SYNC_CHECK = """
import sys
import torch
import torch.distributed as dist
from latcomp.training.regressor import RegressorConfig, RegressorTrainer, close_distributed, init_distributed

torch.set_num_threads(1)
init_distributed("cpu")
config = RegressorConfig(generator=sys.argv[1], out=sys.argv[2], blocks=(1, 1), widths=(8, 16), steps=3,
                         batch_size=2, val_every=3, val_size=2)
trainer = RegressorTrainer(config)
z = trainer._step_randomness(0)[0]
trainer.fit(quiet=True)
for name, tensor in (("params", torch.cat([p.detach().flatten() for p in trainer.regressor.parameters()])),
                     ("z", z.flatten())):
    gathered = [torch.zeros_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, tensor)
    if dist.get_rank() == 0:
        print(name, "equal" if torch.equal(*gathered) else "different")
close_distributed()
"""


def test_ranks_share_weights_but_not_samples(tmp_path):
    torch.manual_seed(0)
    generator = StyleGAN2Generator(size=32, style_dim=32, n_mlp=2, channels={4: 16, 8: 16, 16: 8, 32: 8})
    generator_file = save(tmp_path / "G.safetensors", generator, latent_avg=generator.compute_w_avg(n=256))
    script = tmp_path / "sync_check.py"
    script.write_text(SYNC_CHECK)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(script), str(generator_file), str(tmp_path / "run")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, timeout=90, env=env, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    # gradients are all-reduced, so the replicas stay identical; each rank draws its own latents
    assert "params equal" in result.stdout and "z different" in result.stdout, result.stdout
