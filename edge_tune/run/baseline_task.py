"""The baseline trained on a GPU node of the cluster, as a Ray task, when trials ask for GPUs.

The driver often has no GPU (a laptop, a head node): training the baseline there left the
GPUs idle for minutes (ResNet-20 on 10,000 Fashion-MNIST images: 104 s on the driver's CPU
while an H200 waited). When ``tune.trial_gpus`` > 0 and the cluster has a GPU, the baseline is
trained by a task that holds one GPU, on whichever node Ray gives it; its weights come back
into the driver's cache, with where they were trained, and everything after it (export,
accuracy as deployed, the benchmark actor) is as for a baseline trained here.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import ray
import torch

from edge_tune.catalog.data import load_data
from edge_tune.compression.baseline import cached_folder, store_baseline, train_baseline
from edge_tune.compression.train import set_threads
from edge_tune.config import Config
from edge_tune.core.console import log_stderr
from edge_tune.run.cluster import trial_request

Log = Callable[[str], None]


def wants_gpu_baseline(config: Config) -> bool:
    """Whether this run's baseline should train as a GPU task: trials ask for GPUs, the
    baseline is trained (no checkpoint, some epochs) and not cached yet."""
    b = config.baseline
    return config.tune.trial_gpus > 0 and b.checkpoint is None and b.epochs > 0 \
        and cached_folder(config) is None


def _train_here(config: Config) -> tuple[dict[str, torch.Tensor], dict[str, Any], list[str]]:
    """Inside the task: the data loaded on this node, the model trained on its GPU (its CPU
    when Ray gave a GPU that CUDA cannot see), and what it said."""
    set_threads(config.train_threads or max(1, int(config.tune.trial_cpus or 1)))
    lines: list[str] = []
    device = "cuda:0" if torch.cuda.is_available() else "cpu"  # the GPU Ray assigned
    model, meta = train_baseline(config, load_data(config.data), lines.append, device)
    meta.update(node_id=ray.get_runtime_context().get_node_id(),
                node_ip=ray.util.get_node_ip_address())
    return model.state_dict(), meta, lines


def train_on_gpu_node(config: Config, log: Log = log_stderr) -> bool:
    """Train the baseline as a Ray task holding one GPU and cache it here, when
    :func:`wants_gpu_baseline` and the cluster has a GPU; whether it did."""
    if not wants_gpu_baseline(config):
        return False
    if ray.cluster_resources().get("GPU", 0) < 1:
        log("baseline: trials ask for GPUs but the cluster has none; the baseline trains here")
        return False
    cpus = trial_request(config).get("CPU", 1)
    log(f"baseline: training {config.model} on {config.data.name} for "
        f"{config.baseline.epochs} epochs as a Ray task with one GPU")
    started = time.perf_counter()
    task = ray.remote(_train_here).options(num_gpus=1, num_cpus=cpus)
    state, meta, lines = ray.get(task.remote(config))
    for line in lines:
        log(line)
    folder = store_baseline(config, state, meta)
    log(f"baseline: trained on {meta['device']} at {meta['node_ip']} (node "
        f"{meta['node_id'][:8]}): top-1 {meta['top1_torch']:.2f}% after "
        f"{time.perf_counter() - started:.1f} s, cached in {folder}")
    return True
