"""Distillation while fine-tuning: Distiller's loss, a teacher that changes what the student
learns, and the teacher and knobs checked at load."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from edge_tune.catalog.models import create_model
from edge_tune.compression.distill import Teacher
from edge_tune.compression.runner import run_recipe
from edge_tune.config import DistillConfig, config_from_dict
from edge_tune.core.errors import UserError


def test_the_loss_is_distillers() -> None:
    torch.manual_seed(0)
    teacher = nn.Linear(4, 3)
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    student = torch.randn(8, 3)
    ce = nn.functional.cross_entropy(student, y)
    same = Teacher(teacher, DistillConfig(temperature=2.0, distill_weight=0.7,
                                          student_weight=0.3))
    # the student copying the teacher exactly: the KL term is zero
    assert same.loss(x, teacher(x).detach(), ce) == pytest.approx(0.3 * ce.item(), abs=1e-6)
    labels_only = Teacher(teacher, DistillConfig(distill_weight=0.0, student_weight=1.0))
    assert labels_only.loss(x, student, ce) == pytest.approx(ce.item())
    t = 4.0
    kl = nn.functional.kl_div(nn.functional.log_softmax(student / t, 1),
                              nn.functional.softmax(teacher(x) / t, 1), reduction="batchmean")
    both = Teacher(teacher, DistillConfig(temperature=t, distill_weight=0.5, student_weight=0.5))
    assert both.loss(x, student, ce) == pytest.approx(0.5 * ce.item() + 0.5 * kl.item())


def test_a_teacher_changes_what_the_student_learns() -> None:
    torch.manual_seed(0)
    base = create_model("simple_cnn", 10).eval()
    data = torch.utils.data.TensorDataset(torch.randn(64, 3, 16, 16), torch.randint(0, 10, (64,)))
    recipe = {"version": 1}
    from edge_tune.compression.recipe import recipe_from_dict

    trained = []
    for teacher in (None, Teacher(copy.deepcopy(base), DistillConfig())):
        student = copy.deepcopy(base)
        run_recipe(student, recipe_from_dict(recipe), data, 1, 0.05, 0.0, 16,
                   torch.zeros(1, 3, 16, 16), log=lambda _: None, teacher=teacher)
        trained.append(next(student.parameters()).detach().clone())
    assert not torch.equal(trained[0], trained[1])
    assert not torch.equal(trained[0], next(base.parameters()))  # both trained


@pytest.mark.parametrize(("distill", "message"), [
    ({"distill_weight": 1.5}, "finetune.distill.distill_weight: expected 0 <= x <= 1, got 1.5"),
    ({"student_weight": -0.1}, "finetune.distill.student_weight: expected 0 <= x <= 1"),
    ({"temperature": 0}, "finetune.distill.temperature: expected 0.01 <= x <= 100"),
    ({"teacher": "resnet56_cifar"}, "finetune.distill.teacher: a teacher other than the "
                                     "baseline needs both"),
    ({"teacher": "resnet57", "teacher_checkpoint": "t.pt"},
     "finetune.distill.teacher: unknown 'resnet57'"),
    ({"temprature": 3}, "finetune.distill: unknown 'temprature'"),
])
def test_bad_distillation_settings_are_one_line(distill: dict, message: str) -> None:
    with pytest.raises(UserError) as err:
        config_from_dict({"finetune": {"distill": distill}})
    assert str(err.value).startswith(message) and "\n" not in str(err.value)
