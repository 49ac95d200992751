"""`latcomp train` and `latcomp finetune` on tiny generators: learning, outputs, resume, errors, losses."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from latcomp.cli import main
from latcomp.data.faces import render
from latcomp.imaging import save_png
from latcomp.nets import ProGANGenerator, StyleGAN2Generator, load, save
from latcomp.training.losses import LOSSES, LossBatch, LossSetup, Objective, register_loss
from latcomp.training.lpips import LPIPS, LPIPSWeightsError
from latcomp.training.regressor import RegressorConfig, RegressorTrainer, build_regressor

TINY_ENCODER = dict(blocks=(1, 1), widths=(8, 16))


pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def stylegan_file(tmp_path_factory):
    torch.manual_seed(0)
    generator = StyleGAN2Generator(size=32, style_dim=32, n_mlp=2, channels={4: 16, 8: 16, 16: 8, 32: 8})
    return save(tmp_path_factory.mktemp("g") / "stylegan2.safetensors", generator,
                latent_avg=generator.compute_w_avg(n=256))


@pytest.fixture(scope="module")
def progan_file(tmp_path_factory):
    torch.manual_seed(0)
    generator = ProGANGenerator(sizes=[32, 16, 16, 8, 8])
    return save(tmp_path_factory.mktemp("g") / "progan.safetensors", generator)


def config(generator, out, **changes) -> RegressorConfig:
    values = dict(generator=str(generator), out=str(out), steps=4, batch_size=4, val_every=2, val_size=4,
                  log_every=1, **TINY_ENCODER)
    return RegressorConfig(**{**values, **changes})


def records(out) -> list[dict]:
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("which", ["stylegan", "progan"])
def test_steps_reduce_the_loss_on_a_fixed_batch(which, stylegan_file, progan_file, tmp_path):
    generator = stylegan_file if which == "stylegan" else progan_file
    trainer = RegressorTrainer(config(generator, tmp_path, lr=3e-3))
    losses = [trainer.train_step(0)["loss"] for _ in range(8)]  # step 0 again and again: the same batch
    assert losses[-1] < 0.9 * losses[0], losses


def test_fit_writes_checkpoints_regressor_samples_and_log(stylegan_file, tmp_path):
    trainer = RegressorTrainer(config(stylegan_file, tmp_path))
    assert trainer.regressor.arch == "stylegan-encoder"
    assert trainer.regressor.input_size == 32  # the generator's resolution, not upsampled to 256
    trainer.fit()
    for name in ("checkpoint.pt", "best.pt", "regressor.safetensors", "samples/step0000004.png"):
        assert (tmp_path / name).is_file(), name
    regressor = load(tmp_path / "regressor.safetensors")
    assert regressor.latent_shape == (8, 32) and regressor.config["blocks"] == [1, 1]
    assert load(tmp_path / "checkpoint.pt").arch == "stylegan-encoder"  # `latcomp info` reads it as well
    log = records(tmp_path)
    validations = [r for r in log if r.get("kind") == "val"]
    assert [r["step"] for r in validations] == [2, 4]
    assert {"mae_masked", "mae_full", "latent"} <= set(validations[0])
    assert 0 <= validations[-1]["mae_masked"] <= 1
    assert any("'lpips' off" in r.get("note", "") for r in log)  # no weights: the log says the term is off
    train = [r for r in log if r.get("kind") == "train"]
    assert len(train) == 4 and {"loss", "latent", "pixel"} <= set(train[0])
    assert trainer.best["step"] in (2, 4)


def test_resume_continues_exactly(stylegan_file, tmp_path):
    straight = RegressorTrainer(config(stylegan_file, tmp_path / "straight"))
    straight.fit(quiet=True)

    RegressorTrainer(config(stylegan_file, tmp_path / "split", steps=2)).fit(quiet=True)
    resumed = RegressorTrainer(config(stylegan_file, tmp_path / "split"), resume=True)
    assert resumed.step == 2
    resumed.fit(quiet=True)

    ours, theirs = resumed.regressor.state_dict(), straight.regressor.state_dict()
    for key in theirs:
        assert torch.equal(ours[key], theirs[key]), f"{key} differs after resume"
    for ours_state, theirs_state in zip(resumed.optim.state_dict()["state"].values(),
                                        straight.optim.state_dict()["state"].values(), strict=True):
        assert all(torch.equal(ours_state[k], theirs_state[k]) for k in theirs_state)
    assert resumed.best == straight.best


def test_resume_with_other_architecture_flags_is_refused(stylegan_file, tmp_path):
    RegressorTrainer(config(stylegan_file, tmp_path, steps=2)).fit(quiet=True)
    with pytest.raises(ValueError, match="--resume"):
        RegressorTrainer(config(stylegan_file, tmp_path, widths=(8, 8)), resume=True)


def test_progan_with_real_faces_and_part_masks(progan_file, tmp_path):
    trainer = RegressorTrainer(config(progan_file, tmp_path, real_images="faces", real_fraction=0.5,
                                      masks="paper,parts", steps=2))
    assert trainer.regressor.arch == "progan-encoder" and trainer.n_real == 2
    z, real, masks = trainer._step_randomness(0)
    assert z.shape == (2, 32) and real.shape == (2, 3, 32, 32) and masks.shape == (4, 1, 32, 32)
    losses = trainer.fit(quiet=True)
    assert all(np.isfinite(v) for v in losses.values())
    with pytest.raises(ValueError, match="part map"):  # generated images have none
        RegressorTrainer(config(progan_file, tmp_path / "parts", masks="parts"))


def test_ranks_draw_different_samples(stylegan_file, tmp_path):
    trainer = RegressorTrainer(config(stylegan_file, tmp_path))
    z0, _, masks0 = trainer._step_randomness(5)
    trainer.rank = 1
    z1, _, masks1 = trainer._step_randomness(5)
    assert not torch.equal(z0, z1) and not torch.equal(masks0, masks1)


def test_command_line_trains_and_rejects_wrong_generator_files(stylegan_file, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--generator", str(stylegan_file), "--out", str(out), "--steps", "2", "--batch-size",
            "2", "--val-every", "2", "--val-size", "2", "--blocks", "1", "1", "--widths", "8", "16",
            "--threads", "1"]
    assert main(argv) == 0
    assert load(out / "regressor.safetensors").config["widths"] == [8, 16]

    capsys.readouterr()
    encoder = tmp_path / "encoder.safetensors"
    save(encoder, load(out / "regressor.safetensors"))
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"this is not a checkpoint" * 10)
    for path, expected in ((encoder, "not a generator"), (garbage, "garbage.pt"),
                           (tmp_path / "missing.pt", "no such checkpoint")):
        assert main(["train", "--generator", str(path), "--out", str(tmp_path / "bad")]) == 2
        assert expected in capsys.readouterr().err


def test_help_lists_the_contract_flags(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = capsys.readouterr().out
    for flag in ("--generator", "--arch", "--regressor-arch", "--steps", "--batch-size", "--lr", "--out",
                 "--resume", "--device", "--masks", "--real-images", "--real-fraction", "--lpips-weights",
                 "--grad-clip", "--val-every", "--seed", "--widths", "--blocks"):
        assert flag in text, flag
    with pytest.raises(SystemExit):
        main(["finetune", "--help"])
    assert "--regressor" in capsys.readouterr().out


def test_finetune_reduces_reconstruction_error(stylegan_file, tmp_path, capsys):
    generator = load(stylegan_file)
    torch.manual_seed(0)
    regressor = build_regressor(RegressorConfig(generator="", out="", **TINY_ENCODER), generator)
    save(tmp_path / "E.safetensors", regressor)
    image = save_png(tmp_path / "face.png", render(3, 32).image)
    tuned = tmp_path / "E_tuned.safetensors"
    argv = ["finetune", "--generator", str(stylegan_file), "--regressor", str(tmp_path / "E.safetensors"),
            "--image", str(image), "--steps", "25", "--lr", "3e-3", "--out", str(tuned), "--threads", "1"]
    assert main(argv) == 0
    before, after = (float(x) for x in capsys.readouterr().out.split("MAE ")[1].split(";")[0].split(" -> "))
    assert after < 0.9 * before, (before, after)
    assert load(tuned).config == regressor.config
    assert not torch.equal(load(tuned).conv1.weight, regressor.conv1.weight)


# ---- losses ----


def synthetic_lpips_files(tmp_path, net: str) -> tuple:
    """A narrow trunk in torchvision's key layout and an LPIPS v0.1-style linear file."""
    convs = ({0: 4, 2: 4, 5: 6, 7: 6, 10: 8, 12: 8, 14: 8, 17: 8, 19: 8, 21: 8, 24: 8, 26: 8, 28: 8}
             if net == "vgg" else {0: 4, 3: 6, 6: 8, 8: 8, 10: 8})
    kernels = {0: 11, 3: 5} if net == "alex" else {}
    generator = torch.Generator().manual_seed(0)
    trunk, channels = {}, 3
    for index, width in convs.items():
        k = kernels.get(index, 3)
        trunk[f"features.{index}.weight"] = torch.randn(width, channels, k, k, generator=generator) * 0.2
        trunk[f"features.{index}.bias"] = torch.zeros(width)
        channels = width
    trunk["classifier.0.weight"] = torch.zeros(2, 2)  # ignored, as in the real files
    taps = [4, 6, 8, 8, 8] if net == "vgg" else [4, 6, 8, 8, 8]
    lins = {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=generator) for k, c in enumerate(taps)}
    torch.save(trunk, tmp_path / f"{net}_trunk.pth")
    torch.save(lins, tmp_path / f"{net}_lin.pth")
    return tmp_path / f"{net}_trunk.pth", tmp_path / f"{net}_lin.pth"


@pytest.mark.parametrize("net", ["vgg", "alex"])
def test_lpips_loads_documented_files_and_runs(net, tmp_path):
    trunk, lin = synthetic_lpips_files(tmp_path, net)
    distance = LPIPS.from_files(lin, trunk)  # any order
    assert distance.calibrated and distance.trunk.net == net
    a = torch.rand(2, 3, 32, 32) * 2 - 1
    b = (a + 0.3 * torch.randn_like(a)).requires_grad_(True)
    d = distance(a, b)
    assert d.shape == (2,) and torch.all(d > 0)
    assert torch.allclose(distance(a, a), torch.zeros(2), atol=1e-6)
    d.sum().backward()
    assert b.grad is not None and b.grad.abs().sum() > 0
    assert not LPIPS.from_files(trunk).calibrated  # trunk alone: uniform channel weights


def test_lpips_rejects_other_files(tmp_path):
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
    with pytest.raises(LPIPSWeightsError, match="neither a trunk"):
        LPIPS.from_files(tmp_path / "other.pth")
    _, lin = synthetic_lpips_files(tmp_path, "vgg")
    with pytest.raises(LPIPSWeightsError, match="no trunk"):
        LPIPS.from_files(lin)


def test_trainer_uses_lpips_when_weights_are_given(stylegan_file, tmp_path):
    files = tuple(str(p) for p in synthetic_lpips_files(tmp_path, "vgg"))
    trainer = RegressorTrainer(config(stylegan_file, tmp_path / "run", lpips_weights=files, steps=1))
    assert list(trainer.objective.terms) == ["latent", "pixel", "lpips"]
    assert trainer.fit(quiet=True)["lpips"] > 0
    assert any("calibrated" in note for note in trainer.objective.notes)


def test_losses_plug_in_by_name():
    @register_loss("test_mean_abs")
    def mean_abs(setup: LossSetup):
        return lambda batch: (batch.pred_image - batch.target_image).abs().mean()

    try:
        objective = Objective.from_spec("pixel:1,test_mean_abs:0.5", LossSetup("progan"))
        pred, target = torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)
        total, values = objective(LossBatch(torch.zeros(2, 8), None, pred, target))
        assert values == {"pixel": 1.0, "test_mean_abs": 1.0} and total.item() == pytest.approx(1.5)
        with pytest.raises(ValueError, match="unknown loss"):
            Objective.from_spec("nope:1", LossSetup("progan"))
    finally:
        del LOSSES["test_mean_abs"]


def test_latent_loss_is_cosine_for_progan_and_mse_for_stylegan():
    pred, target = torch.tensor([[2.0, 0.0]]), torch.tensor([[1.0, 0.0]])
    batch = LossBatch(pred, target, torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2))
    assert LOSSES["latent"](LossSetup("progan"))(batch).item() == pytest.approx(0.0)  # direction only
    assert LOSSES["latent"](LossSetup("stylegan2"))(batch).item() == pytest.approx(0.5)
    real_only = LossBatch(pred, None, batch.pred_image, batch.target_image)
    assert LOSSES["latent"](LossSetup("stylegan2"))(real_only).item() == 0.0


def test_init_regressor_starts_from_saved_weights_and_refuses_another_architecture(stylegan_file, tmp_path):
    RegressorTrainer(config(stylegan_file, tmp_path / "first", steps=2)).fit(quiet=True)
    saved = load(tmp_path / "first" / "regressor.safetensors")
    trainer = RegressorTrainer(config(stylegan_file, tmp_path / "second", seed=1,
                                      init_regressor=str(tmp_path / "first" / "regressor.safetensors")))
    for key, value in saved.state_dict().items():
        assert torch.equal(trainer.regressor.state_dict()[key], value), key
    with pytest.raises(ValueError, match="--init-regressor"):
        RegressorTrainer(config(stylegan_file, tmp_path / "third", widths=(8, 8),
                                init_regressor=str(tmp_path / "first" / "regressor.safetensors")))
