"""The recipe knobs, each by its effect: skdsl/train/ema.py, mixing.py, augment.py, the AdamW
groups and warm-up of recipe.py, and the runner's --clip-grad, --accum-steps and --ema."""

import math

import pytest
import torch
from torch import nn

import skdsl
from skdsl.base.errors import CheckpointError
from skdsl.train import EvalConfig, TrainConfig, evaluate, train
from skdsl.train import checkpoint as C
from skdsl.train import data as D
from skdsl.train import recipe as R
from skdsl.train.augment import OPERATIONS, RandAugment
from skdsl.train.ema import WeightAverage, decay_at
from skdsl.train.mixing import Mixer, paste_box

from helpers import write_spec

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# No BatchNorm and no dropout: a batch's gradient is then the mean of its images' gradients,
# whatever batches they are split into, which is what --accum-steps must reproduce.
PLAIN_SPEC = """\
network plain:
    input 3x16x16
    classes 4

    stage conv1: conv 3x3, 8, stride 2, bn no, bias yes
    stage conv2: conv 3x3, 16, stride 2, bn no, bias yes
    stage head:
        avgpool global
        fc classes
"""
# BatchNorm, for the EMA of running statistics and the no-decay groups.
BN_SPEC = PLAIN_SPEC.replace("network plain", "network normed").replace(
    "stride 2, bn no, bias yes\n    stage conv2", "stride 2\n    stage conv2")


@pytest.fixture
def spec(tmp_path):
    return str(write_spec(PLAIN_SPEC, tmp_path, "plain.sk"))


def config(spec, out, **changes):
    settings = dict(spec=spec, out=str(out), data="synthetic:train=96,val=32", batch_size=16,
                    epochs=1, seed=1, threads=1)
    return TrainConfig(**{**settings, **changes})


def parameters(path) -> dict:
    saved = C.load(path)
    names = {name for name, _ in skdsl.compile(skdsl.parse(PLAIN_SPEC)).named_parameters()}
    return {name: tensor for name, tensor in saved["model"].items() if name in names}


# -- accumulation: K batches of B are one batch of K × B -------------------------------------------


def test_accumulating_two_batches_of_8_equals_one_batch_of_16(spec, tmp_path):
    train(config(spec, tmp_path / "big", batch_size=16))
    train(config(spec, tmp_path / "accumulated", batch_size=8, accum_steps=2))
    big, accumulated = parameters(tmp_path / "big" / "last.pt"), \
        parameters(tmp_path / "accumulated" / "last.pt")
    for name in big:
        assert torch.allclose(big[name], accumulated[name], rtol=0, atol=1e-6), name
    # ... and not a trivial equality: 8-image steps without accumulation go elsewhere.
    train(config(spec, tmp_path / "small", batch_size=8, lr=0.1 * 16 / 128))
    small = parameters(tmp_path / "small" / "last.pt")
    assert max((small[n] - big[n]).abs().max().item() for n in big) > 1e-3
    assert C.load(tmp_path / "accumulated" / "last.pt")["step"] == 6  # 12 batches, 6 steps


# -- EMA --------------------------------------------------------------------------------------


def test_the_average_follows_its_formula_for_weights_and_running_statistics():
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    average = WeightAverage(model, decay=0.9)
    expected = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    for step in (1, 2, 3):
        with torch.no_grad():
            for tensor in model.state_dict().values():
                tensor.add_(1.5 * step) if tensor.is_floating_point() else tensor.add_(1)
        average.update(model, step)
        decay = min(0.9, (1 + step) / (10 + step))
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                expected[name] = decay * expected[name] + (1 - decay) * tensor
            else:
                expected[name] = tensor.clone()  # BN's batch count: copied
    for name, tensor in average.state_dict().items():
        assert torch.allclose(tensor, expected[name], atol=1e-6), name
    assert decay_at(0.9999, 1) == pytest.approx(2 / 11) and decay_at(0.5, 10**6) == 0.5
    assert not any(p.requires_grad for p in average.module.parameters())


def test_ema_is_evaluated_and_saved_beside_the_weights_without_changing_them(tmp_path):
    path = tmp_path / "normed.sk"
    path.write_text(BN_SPEC)
    plain = train(config(str(path), tmp_path / "plain"))
    averaged = train(config(str(path), tmp_path / "ema", ema=0.5))
    raw = C.load(tmp_path / "plain" / "last.pt")["model"]
    saved = C.load(tmp_path / "ema" / "last.pt")
    assert all(torch.equal(raw[k], saved["model"][k]) for k in raw)  # training is untouched
    assert any(not torch.equal(saved["ema"][k], saved["model"][k]) for k in raw)
    record = averaged.history[-1]
    assert record["val_top1"] == plain.history[-1]["val_top1"]
    # eval --ema measures the average: what the run recorded for it, not the raw weights.
    checkpoint = str(tmp_path / "ema" / "last.pt")
    ema_eval = evaluate(EvalConfig(str(path), checkpoint=checkpoint, ema=True))
    raw_eval = evaluate(EvalConfig(str(path), checkpoint=checkpoint))
    assert ema_eval["loss"] == pytest.approx(record["ema_val_loss"], rel=1e-6)
    assert raw_eval["loss"] == pytest.approx(record["val_loss"], rel=1e-6)
    assert ema_eval["loss"] != raw_eval["loss"]
    with pytest.raises(CheckpointError) as error:
        evaluate(EvalConfig(str(path), checkpoint=str(tmp_path / "plain" / "last.pt"), ema=True))
    assert error.value.code == "SK651"


def test_ema_and_accumulation_resume_exactly_from_the_middle_of_an_epoch(spec, tmp_path):
    knobs = dict(batch_size=8, accum_steps=2, ema=0.8, clip_grad=0.5, mixup=0.4, cutmix=1.0)
    train(config(spec, tmp_path / "straight", **knobs))
    stopped = train(config(spec, tmp_path / "resumed", max_steps=3, **knobs))
    assert stopped.status == "max-steps"
    assert C.load(tmp_path / "resumed" / "last.pt")["batch_in_epoch"] == 6  # 3 steps of 2
    train(config(spec, tmp_path / "resumed", resume=True, **knobs))
    straight, resumed = (C.load(tmp_path / name / "last.pt") for name in ("straight", "resumed"))
    for field in ("model", "ema"):
        assert all(torch.equal(straight[field][k], resumed[field][k]) for k in straight[field])


# -- clipping -----------------------------------------------------------------------------------


def test_clip_grad_bounds_the_first_update_to_lr_times_the_norm(spec, tmp_path):
    """SGD's first step moves the weights by lr × the (clipped) gradient: weight decay is off,
    and the momentum buffer starts as the gradient itself."""
    torch.manual_seed(1)
    initial = dict(skdsl.compile(skdsl.load(spec)).named_parameters())
    moved = {}
    for clip in (None, 1e-3):
        out = tmp_path / f"clip{clip}"
        train(config(spec, out, max_steps=1, clip_grad=clip, weight_decay=0.0, lr=0.1))
        after = parameters(out / "last.pt")
        moved[clip] = math.sqrt(sum(((after[n] - initial[n].detach()) ** 2).sum().item()
                                    for n in after))
    assert moved[1e-3] == pytest.approx(0.1 * 1e-3, rel=1e-3)
    assert moved[None] > 10 * moved[1e-3]  # the unclipped gradient was larger


# -- AdamW and its no-decay groups ---------------------------------------------------------------


def test_adamw_decays_weights_but_not_norm_or_bias_parameters():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 2))
    recipe = R.resolve("paper", opt="adamw")
    assert (recipe.lr, recipe.weight_decay) == (1e-3, 0.05)  # AdamW's own defaults, batch 256
    assert R.resolve("cifar", opt="adamw", batch_size=64, accum_steps=2).lr == pytest.approx(5e-4)
    optimizer = R.make_optimizer(model, recipe)
    decayed, exempt = optimizer.param_groups
    assert decayed["weight_decay"] == 0.05 and exempt["weight_decay"] == 0.0
    assert {id(p) for p in exempt["params"]} == {id(model[1].weight), id(model[1].bias),
                                                 id(model[3].bias)}
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    model(torch.randn(2, 3, 8, 8)).sum().mul(0).backward()  # zero gradients: only decay acts
    optimizer.step()
    for name, p in model.named_parameters():
        shrunk = before[name] * (1 - recipe.lr * 0.05)
        assert torch.allclose(p, before[name] if p.ndim <= 1 else shrunk, atol=1e-7), name
    sgd = R.make_optimizer(model, R.resolve("paper"))
    assert len(sgd.param_groups) == 1 and sgd.param_groups[0]["weight_decay"] == 1e-4  # Caffe


# -- warm-up ------------------------------------------------------------------------------------


def test_warmup_steps_ramp_the_lr_over_that_many_optimiser_steps():
    schedule = R.LrSchedule.for_run(R.resolve("cifar", warmup_steps=4, warmup_epochs=9),
                                    steps_per_epoch=10)
    assert [schedule(step) for step in range(5)] == pytest.approx([0.025, 0.05, 0.075, 0.1, 0.1])
    by_epochs = R.LrSchedule.for_run(R.resolve("cifar", warmup_epochs=0.5), steps_per_epoch=10)
    assert by_epochs.warmup_steps == 5


# -- mixup and cutmix ----------------------------------------------------------------------------


def test_mixup_blends_each_image_with_its_partner_and_the_loss_with_its_label():
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 3])
    mixed, targets = Mixer(mixup=0.4, cutmix=0.0, seed=0)(images, labels, step=5, part=0, rank=0)
    lam = targets.lam
    assert 0 <= lam <= 1 and torch.equal(targets.partners, torch.tensor([3, 2, 1, 0]))
    assert torch.allclose(mixed, lam * images + (1 - lam) * images.flip(0))
    logits = torch.randn(4, 4)
    loss = nn.CrossEntropyLoss()
    assert targets.loss(loss, logits) == pytest.approx(
        (lam * loss(logits, labels) + (1 - lam) * loss(logits, labels.flip(0))).item())
    again, same = Mixer(0.4, 0.0, 0)(images, labels, step=5, part=0, rank=0)
    other = Mixer(0.4, 0.0, 0)(images, labels, step=6, part=0, rank=0)[1]
    assert torch.equal(again, mixed) and same.lam == lam and other.lam != lam


def test_cutmix_pastes_a_box_whose_area_sets_the_label_share():
    images = torch.zeros(2, 3, 16, 16)
    images[1] = 1.0
    generator = torch.Generator().manual_seed(3)
    mixed, lam = paste_box(images, images.flip(0), 0.7, generator)
    pasted = (mixed[0, 0] == 1).float().mean().item()  # image 0 got image 1's pixels in a box
    assert 0 < pasted < 1 and lam == pytest.approx(1 - pasted)
    assert torch.equal(mixed[1] == 0, mixed[0] == 1)  # the partner got the same box back
    through_mixer, targets = Mixer(0.0, 1.0, 0)(images, torch.tensor([0, 1]), 0, 0, 0)
    assert targets.lam == pytest.approx(1 - (through_mixer[0, 0] == 1).float().mean().item())


# -- RandAugment and the crop scale --------------------------------------------------------------


def test_randaugment_changes_training_images_deterministically_and_never_validation():
    source = D.open_source(D.parse_source("synthetic:train=8,val=8"), (3, 16, 16), 4, seed=0)
    augmented = D.open_source(D.parse_source("synthetic:train=8,val=8"), (3, 16, 16), 4, seed=0,
                              policy=RandAugment())
    plain = [source.train[(0, i)][0] for i in range(8)]
    twice = [augmented.train[(0, i)][0] for i in range(2)]
    changed = [augmented.train[(0, i)][0] for i in range(8)]
    assert sum(not torch.equal(a, b) for a, b in zip(plain, changed)) >= 6  # identity is 1 of 13
    assert all(torch.equal(a, b) for a, b in zip(twice, changed))  # seeded by (seed, epoch, index)
    assert torch.equal(source.val[0][0], augmented.val[0][0])


def test_randaugment_operations_at_known_values():
    image = torch.tensor([0.1, 0.5, 0.9]).view(3, 1, 1).expand(3, 4, 4).clone()
    assert torch.allclose(OPERATIONS["solarize"](image, 0.3, 1), torch.where(image >= 0.7,
                                                                             1 - image, image))
    assert torch.allclose(OPERATIONS["brightness"](image, 0.3, -1), image * (1 - 0.27))
    posterized = OPERATIONS["posterize"](image, 9 / 30, 1)  # 7 bits: the lowest bit cleared
    assert torch.equal((posterized * 255).round().to(torch.uint8) % 2,
                       torch.zeros(3, 4, 4, dtype=torch.uint8))
    shifted = OPERATIONS["translate_x"](torch.arange(16.).view(1, 1, 16).expand(3, 16, 16), 0.3, 1)
    assert shifted[0, 0, -1] == 0  # filled with black where the image moved away


def test_crop_scale_sets_how_much_of_a_photograph_a_training_crop_keeps():
    image = torch.zeros(3, 64, 64)
    image[:, :, 32:] = 255  # left half black, right half white
    def flat_crops(scale):
        transform = D.ResizedCropFlipNormalize((0, 0, 0), (1, 1, 1), (16, 16), scale)
        crops = [transform(image, D.sample_generator(0, 0, i)) for i in range(30)]
        return sum(float(crop.max() - crop.min()) < 0.05 for crop in crops)
    assert flat_crops((1.0, 1.0)) == 0  # the whole image: both halves, always
    assert flat_crops((0.01, 0.01)) >= 20  # small crops mostly miss the edge
    assert R.resolve("paper", crop_scale=(0.3, 0.9)).image_crop_scale == (0.3, 0.9)
    assert R.resolve("paper-light").image_crop_scale == (0.25, 1.0)
