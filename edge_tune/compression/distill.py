"""Knowledge distillation while fine-tuning, as Distiller computes it (its
``KnowledgeDistillationPolicy``): the student's loss is ``student_weight`` x cross-entropy with
the labels + ``distill_weight`` x the KL divergence between its outputs and the teacher's,
both softened at ``temperature`` (no T^2 factor, as in Distiller). The teacher (the
uncompressed baseline, by default) runs in eval mode, without gradients, on each batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edge_tune.catalog.models import create_model
from edge_tune.compression.baseline import load_checkpoint
from edge_tune.config import DistillConfig


@dataclass
class Teacher:
    """A teacher model and the knobs of its lesson."""

    model: nn.Module
    settings: DistillConfig

    def loss(self, x: torch.Tensor, logits: torch.Tensor,
             student_loss: torch.Tensor) -> torch.Tensor:
        """The distilled loss of a batch ``x`` whose student outputs are ``logits`` and whose
        loss against the labels is ``student_loss``."""
        s = self.settings
        self.model.eval()
        with torch.no_grad():
            soft_targets = nn.functional.softmax(self.model(x) / s.temperature, dim=1)
        soft_log_probs = nn.functional.log_softmax(logits / s.temperature, dim=1)
        kl = nn.functional.kl_div(soft_log_probs, soft_targets, reduction="batchmean")
        return s.student_weight * student_loss + s.distill_weight * kl


def teacher_for(settings: DistillConfig, baseline: nn.Module, num_classes: int) -> Teacher:
    """The configured teacher on the baseline's device: ``baseline`` itself (a copy the
    caller does not train), or ``settings.teacher`` with its checkpoint."""
    if settings.teacher is None:
        return Teacher(baseline, settings)
    model = create_model(settings.teacher, num_classes)
    assert settings.teacher_checkpoint is not None  # config: both or neither
    load_checkpoint(settings.teacher_checkpoint, model, "finetune.distill.teacher_checkpoint")
    device = next(baseline.parameters()).device
    return Teacher(model.to(device), settings)
