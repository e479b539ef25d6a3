"""skdsl/train/recipe.py: the paper's recipe, the lr rule and the schedules."""

import math

import pytest
import torch

from skdsl.train import recipe as R
from skdsl.core.settings import RECIPE_NAMES


def test_the_paper_recipe_is_section_4_1():
    paper = R.resolve("paper")
    assert (paper.epochs, paper.batch_size, paper.lr) == (100, 256, 0.1)
    assert (paper.momentum, paper.weight_decay, paper.label_smoothing) == (0.9, 1e-4, 0.1)
    assert paper.schedule == "step" and paper.milestones == (30, 60, 90)
    light = R.resolve("paper-light")
    assert light.weight_decay == 4e-5 and light.light_augmentation
    assert tuple(R.RECIPES) == RECIPE_NAMES


def test_lr_scales_linearly_with_the_batch_unless_given():
    assert R.resolve("paper", batch_size=64).lr == pytest.approx(0.025)
    assert R.resolve("paper", batch_size=1024).lr == pytest.approx(0.4)
    assert R.resolve("cifar", batch_size=64).lr == pytest.approx(0.05)
    assert R.resolve("paper", batch_size=64, lr=0.3).lr == 0.3


def test_step_schedule_divides_by_ten_after_epochs_30_60_90():
    schedule = R.LrSchedule.for_run(R.resolve("paper"), steps_per_epoch=10)
    assert schedule.total_steps == 1000
    assert schedule(0) == schedule(299) == pytest.approx(0.1)
    assert schedule(300) == pytest.approx(0.01)
    assert schedule(600) == pytest.approx(0.001)
    assert schedule(999) == pytest.approx(0.0001)


def test_a_shorter_run_follows_the_same_schedule_up_to_its_end():
    """Milestones are epochs: a 40-epoch run is the first 40 epochs of the 100-epoch run."""
    short = R.LrSchedule.for_run(R.resolve("paper", epochs=40), steps_per_epoch=7)
    full = R.LrSchedule.for_run(R.resolve("paper"), steps_per_epoch=7)
    assert all(short(step) == full(step) for step in range(40 * 7))


def test_warmup_then_cosine():
    schedule = R.LrSchedule.for_run(
        R.resolve("cifar", epochs=10, schedule="cosine", warmup_epochs=2), steps_per_epoch=5)
    assert schedule(0) == pytest.approx(0.1 / 10)
    assert schedule(9) == pytest.approx(0.1)
    assert schedule(10) == pytest.approx(0.1)
    halfway = 10 + (50 - 10) // 2
    assert schedule(halfway) == pytest.approx(0.05)
    assert schedule(49) == pytest.approx(0.1 * 0.5 * (1 + math.cos(math.pi * 39 / 40)))


def test_optimizer_and_loss_follow_the_recipe():
    model = torch.nn.Linear(3, 2)
    optimizer = R.make_optimizer(model, R.resolve("paper-light"))
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.9, 4e-5, False)
    R.set_lr(optimizer, 0.5)
    assert group["lr"] == 0.5
    assert R.make_loss(R.resolve("paper")).label_smoothing == 0.1


def test_default_recipe_by_source():
    assert R.default_recipe("imagefolder:/data") == "paper"
    assert R.default_recipe("synthetic") == R.default_recipe("cifar10:/x") == "cifar"
