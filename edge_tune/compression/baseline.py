"""The trained model compression starts from: trained once and cached, or the user's checkpoint.

The cache key is (model, data set, seed, epochs) plus a digest of every other setting that
changes the weights, so a second run with the same settings reuses the weights in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch import nn

from edge_tune.catalog.data import num_classes
from edge_tune.catalog.models import create_model
from edge_tune.catalog.splits import Splits
from edge_tune.compression.deployment import Artifact, Images, deploy
from edge_tune.compression.export import weight_stats
from edge_tune.compression.train import evaluate, train
from edge_tune.config import Config
from edge_tune.core.console import log_stderr
from edge_tune.core.errors import UserError, first_line

Log = Callable[[str], None]


def cache_dir(config: Config) -> Path:
    """Where baselines are cached: ``cache_dir``, else $EDGE_TUNE_CACHE, else ~/.cache/edge_tune."""
    root = config.cache_dir or os.environ.get("EDGE_TUNE_CACHE") or "~/.cache/edge_tune"
    return Path(root).expanduser() / "baselines"


def cache_key(config: Config) -> str:
    """``{model}-{data}-s{seed}-e{epochs}-{digest}``; the digest covers the model's full name,
    the data and the optimiser. A model named by path or module (``dir/net.py:build``) is
    shortened to a file-name-safe ``net_py_build``."""
    b = config.baseline
    data = {k: v for k, v in asdict(config.data).items() if k != "root"}  # moved data: same
    settings = {"data": data, "lr": b.lr, "wd": b.weight_decay, "model": config.model}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    model = re.sub(r"[^A-Za-z0-9_]+", "_", config.model.rsplit("/", 1)[-1]).strip("_")
    return f"{model}-{config.data.name}-s{b.seed}-e{b.epochs}-{digest}"


class ThinningRecipe(NamedTuple):
    """Distiller's ``distiller.thinning.ThinningRecipe`` (module attrs, parameter slices), read
    back as data: what a checkpoint of a thinned model records."""

    modules: dict[str, Any]
    parameters: dict[str, Any]


# What Distiller's checkpoints pickle besides tensors and plain containers: the optimizer's
# class (optimizer_type) and thinning recipes. Nothing else is ever unpickled.
_ALLOWED: list[Any] = [
    *(cls for cls in vars(torch.optim).values()
      if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer)),
    (ThinningRecipe, "distiller.thinning.ThinningRecipe"),
]


def _read(file: Path, key: str) -> Any:
    try:
        with torch.serialization.safe_globals(_ALLOWED):
            return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unpickling failure is a bad checkpoint
        raise UserError(f"{key}: {str(file)!r} is not a readable torch "
                        f"state_dict ({first_line(err)[:160]})") from None


def weight_name(name: str) -> str:
    """A parameter name without Distiller's DataParallel wrapping: ``module.`` in front, or
    inside (``features.module.3.weight``: only AlexNet's and VGG's features were wrapped)."""
    return name.removeprefix("module.").replace(".module.", ".")


def _fit_thinned(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give convs, BatchNorms and linears the (smaller) shapes a thinned checkpoint holds."""
    for name, module in model.named_modules():
        weight = state.get(f"{name}.weight")
        if weight is None or weight.shape == getattr(module, "weight", weight).shape:
            continue
        if isinstance(module, nn.Conv2d) and module.groups == 1:
            module.out_channels, module.in_channels = int(weight.shape[0]), int(weight.shape[1])
        elif isinstance(module, nn.BatchNorm2d):
            module.num_features = int(weight.shape[0])
        elif isinstance(module, nn.Linear):
            module.out_features, module.in_features = int(weight.shape[0]), int(weight.shape[1])
        else:
            continue
        for key, value in module.state_dict().items():
            full = state.get(f"{name}.{key}")
            if full is not None and full.shape != value.shape:
                target = module._parameters if key in module._parameters else module._buffers
                target[key] = (nn.Parameter(torch.empty_like(full)) if key in module._parameters
                               else torch.empty_like(full))


def load_checkpoint(path: str | Path, model: nn.Module, key: str = "baseline.checkpoint") -> None:
    """Load a state_dict, or a checkpoint as Distiller saved it (``state_dict`` with
    ``module.`` prefixes, ``arch``, ``epoch``, ``optimizer_type``, ``thinning_recipes``...).

    Read with ``weights_only=True`` and an explicit allow-list (optimizer classes, thinning
    recipes); a thinned model's smaller layers are given their checkpoint shapes. A file that
    is not such a checkpoint, or that does not fit the model, is a UserError naming
    ``key`` (the config key that gave the file) and the first missing or unexpected keys.
    """
    file = Path(path).expanduser()
    if not file.is_file():
        raise UserError(f"{key}: no such file {str(file)!r}")
    raw = _read(file, key)
    state: Any = raw.get("state_dict") if isinstance(raw, dict) and "state_dict" in raw else raw
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise UserError(f"{key}: {str(file)!r} holds a {type(state).__name__} "
                        "that is not a state_dict of tensors")
    state = {weight_name(k): v for k, v in state.items()}
    if isinstance(raw, dict) and raw.get("thinning_recipes"):
        _fit_thinned(model, state)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(part for part in (
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(unexpected[:3])}" if unexpected else "",
            f"other shape: {', '.join(wrong[:3])}" if wrong else "") if part)
        arch = f" (saved for arch {raw['arch']!r})" if isinstance(raw, dict) and "arch" in raw \
            else ""
        raise UserError(f"{key}: {str(file)!r}{arch} does not fit model "
                        f"{type(model).__name__}: {detail}")
    model.load_state_dict(state)


def check_baseline(config: Config) -> None:
    """Fail early on a checkpoint (the baseline's, a distillation teacher's) that is missing,
    unreadable or of another model."""
    if config.baseline.checkpoint is not None:
        load_checkpoint(config.baseline.checkpoint,
                        create_model(config.model, num_classes(config.data)))
    distill = config.finetune.distill
    if distill.teacher is not None and distill.teacher_checkpoint is not None:
        load_checkpoint(distill.teacher_checkpoint,
                        create_model(distill.teacher, num_classes(config.data)),
                        "finetune.distill.teacher_checkpoint")


def _save_atomic(state: dict[str, torch.Tensor], meta: dict[str, Any], folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".tmp-"))
    torch.save(state, tmp / "model.pt")
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    try:
        tmp.rename(folder)
    except OSError:  # another process cached the same baseline first; theirs is as good
        for file in tmp.iterdir():
            file.unlink()
        tmp.rmdir()


def loss_rise(losses: list[float], factor: float = 1.2) -> tuple[int, int] | None:
    """The first run of epochs over which the mean training loss rose by more than
    ``factor`` and by more than a tenth of the first epoch's loss (first epoch, last epoch:
    0-based), or None: a learning rate too high diverges that way before the schedule's decay
    recovers part of it (a converged loss wobbling near 0 is no such rise)."""
    for first in range(len(losses) - 1):
        last = first
        while last + 1 < len(losses) and losses[last + 1] > losses[last]:
            last += 1
        rise = losses[last] - losses[first]
        if losses[last] > losses[first] * factor and rise > 0.1 * losses[0]:
            return first, last
    return None


def baseline_model(config: Config, splits: Splits,
                   log: Log = print) -> tuple[nn.Module, dict[str, Any]]:
    """The uncompressed trained model and facts about it (source, torch top-1/top-5, seconds)."""
    model = create_model(config.model, splits.num_classes)
    b = config.baseline
    if b.checkpoint is not None:
        load_checkpoint(b.checkpoint, model)
        model.eval()
        return model, {"source": str(b.checkpoint)}
    folder = cached_folder(config)
    if folder is not None:
        model.load_state_dict(torch.load(folder / "model.pt", map_location="cpu",
                                         weights_only=True))
        model.eval()
        meta = json.loads((folder / "meta.json").read_text())
        where = f" (trained on {meta['device']} at {meta['node_ip']})" \
            if meta.get("node_ip") else ""
        log(f"baseline: cached {folder}{where}")
        return model, {**meta, "source": str(folder), "cached": True}
    log(f"baseline: training {config.model} on {config.data.name} for {b.epochs} epochs")
    model, meta = train_baseline(config, splits, log)
    folder = store_baseline(config, model.state_dict(), meta)
    log(f"baseline: top-1 {meta['top1_torch']:.2f}% after {meta['train_seconds']:.1f} s, "
        f"cached in {folder}")
    return model, {**meta, "source": str(folder), "cached": False}


def cached_folder(config: Config) -> Path | None:
    """The cache folder of ``config``'s trained baseline, or None when none is cached."""
    folder = cache_dir(config) / cache_key(config)
    return folder if (folder / "model.pt").is_file() else None


def store_baseline(config: Config, state: dict[str, torch.Tensor],
                   meta: dict[str, Any]) -> Path:
    """A trained baseline's weights (CPU tensors) and facts into the cache; its folder."""
    folder = cache_dir(config) / cache_key(config)
    _save_atomic({k: v.detach().cpu() for k, v in state.items()},
                 {**meta, "key": cache_key(config)}, folder)
    return folder


def train_baseline(config: Config, splits: Splits, log: Log = print,
                   device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """The configured model trained from scratch on ``device`` (``baseline`` settings), back
    on the CPU in eval mode, and its facts: torch top-1/top-5 on test (%), seconds, the last
    epoch's loss, where it trained. Warns when the loss rose for epochs (:func:`loss_rise`)."""
    b = config.baseline
    start = time.perf_counter()
    torch.manual_seed(b.seed)
    model = create_model(config.model, splits.num_classes).to(device)
    losses = train(model, splits.train, b.epochs, b.lr, b.weight_decay,
                   config.data.batch_size, seed=b.seed, log=lambda line: log(f"baseline: {line}"))
    top1, top5 = evaluate(model, splits.test)
    model.cpu().eval()
    rose = loss_rise(losses)
    if rose is not None:
        first, last = rose
        log(f"baseline: warning: the training loss rose from {losses[first]:.2f} (epoch "
            f"{first + 1}) to {losses[last]:.2f} (epoch {last + 1}): baseline.lr {b.lr:g} is "
            f"likely too high for {config.model} (torchvision:mobilenet_v2 on Fashion-MNIST: "
            "lr 0.1 rose so and reached 77.8%, lr 0.02 86.6%; int8 of the first lost 15 "
            "points where the second lost none)")
    return model, {"top1_torch": top1, "top5_torch": top5,
                   "train_seconds": time.perf_counter() - start,
                   "final_loss": losses[-1] if losses else None, "device": device}


@dataclass
class Baseline:
    """The trained, uncompressed model, exported and evaluated as deployed."""

    model: nn.Module
    info: dict[str, Any]  # source, torch accuracy, training seconds, cached or not
    shapes: dict[str, tuple[int, ...]]  # weight name -> shape, for verification
    artifact: Artifact

    def state(self) -> dict[str, torch.Tensor]:
        """The weights as CPU tensors (what trials on other nodes start from)."""
        return {k: v.detach().cpu() for k, v in self.model.state_dict().items()}


def prepare_baseline(config: Config, splits: Splits, test: Images, out: Path,
                     log: Log = log_stderr) -> Baseline:
    """Train (or load from cache / checkpoint) the baseline, export it and measure its accuracy."""
    model, info = baseline_model(config, splits, log)
    out.mkdir(parents=True, exist_ok=True)
    shapes = {k: v[0] for k, v in weight_stats(model).items()}
    log("baseline: export and accuracy as deployed")
    artifact = deploy(model, False, splits, config, out, shapes, test, name="baseline")
    return Baseline(model, info, shapes, artifact)
