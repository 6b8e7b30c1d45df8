"""The timing machinery of the benchmark suite (benchmarks/suite.py): the machine, the two
workloads, model inputs counted by a forward pre-hook, interleaved timed rounds, the bound sweep,
the "x bound" arithmetic and the agreement checks.

Nothing here knows about a particular method; benchmarks/sections.py builds the configurations.
"""

from __future__ import annotations

import copy
import importlib.metadata
import math
import os
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from reliable_saliency import maps as map_functions
from reliable_saliency.core import inputs

# Kinds of plain passes the bound sweep times, per model input:
KINDS = {
    "fwd_bwd": "model(x) + autograd.grad of the target logits w.r.t. x",
    "fwd": "model(x) under torch.no_grad()",
    "double_backprop": "a bare l2-gradient-penalty step per example: forward + input gradient of the clean "
                       "input, forward + input gradient with create_graph of a neighbour, backward of "
                       "cross-entropy + ||g - g'||^2 to the parameters (two model inputs per example)",
    "train": "a bare cross-entropy step: forward, cross-entropy, backward to the parameters",
}

# Deterministic agreement: per image, max |ours - reference| <= MAP_RTOL * max |reference| on at
# least MIN_MATCHING of the images in float32 (a path point that moves by one bit can cross a ReLU
# or max-pool switch of a random network and change one image's map, a wrong method changes all),
# and <= MAP_RTOL_64 on a float64 rerun of a few images; curves within CURVE_ATOL.
MAP_RTOL = 1e-4
MIN_MATCHING = 0.5
MAP_RTOL_64 = 1e-6
CURVE_ATOL = 1e-4


# ----------------------------------------------------------------------------- machine


def loadavg() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        "cpu": cpu, "logical_cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
        "device": str(device), "device_name": cpu, "python": platform.python_version(),
        "platform": platform.platform(), "torch": torch.__version__, "numpy": np.__version__,
        "loadavg_start": loadavg(),
    }
    for name in ("torchvision", "captum", "quantus", "zennit"):
        try:
            info[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:  # reported; the section that needs it fails loudly
            info[name] = "not installed"
    if device.type == "cuda":
        info["device_name"] = info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


# ----------------------------------------------------------------------------- workloads


def resnet18_imagenet(seed: int = 0) -> nn.Module:
    """torchvision ResNet-18, random init (``weights=None``, never downloaded) with ``seed``, in eval
    mode, carrying the ImageNet input space the library's explainers check inputs against."""
    import torchvision

    torch.manual_seed(seed)
    model = torchvision.models.resnet18(weights=None)
    model.input_space = inputs.IMAGENET
    return model.eval()


def build_model(size: int) -> tuple[nn.Module, str]:
    """The book's LeNet at 32 px, a torchvision ResNet-18 at larger sizes (random init, seed 0)."""
    if size == 32:
        from reliable_saliency.models import build

        torch.manual_seed(0)
        return build("lenet").eval(), "the book's LeNet (random init, seed 0)"
    return resnet18_imagenet(0), "torchvision ResNet-18 (random init, seed 0, ImageNet input space)"


def training_model(size: int) -> nn.Module:
    """Paper E's training model at ``size``: LeNet or ResNet-18 with Softplus(beta=3), train mode."""
    if size == 32:
        from reliable_saliency.models import build

        torch.manual_seed(0)
        return build("lenet", softplus_beta=3.0).train()
    from reliable_saliency.models.smoothing import to_softplus

    model = to_softplus(resnet18_imagenet(0), 3.0)
    model.input_space = inputs.IMAGENET
    return model.train()


def load_inputs(kind: str, n: int, size: int, device: torch.device) -> tuple[Tensor, str]:
    """(N, 3, size, size) normalised inputs and where they came from. ``auto``: real images when
    ``$RELIABLE_SALIENCY_DATA`` is set (CIFAR-10 test images at 32 px, the 37 ImageNet validation
    images otherwise), else uniform random pixels (seed 0) in the model's input space."""
    from reliable_saliency import data

    space = inputs.CIFAR10 if size == 32 else inputs.IMAGENET
    if kind == "auto":
        kind = "real" if os.environ.get(data.DATA_ENV) else "random"
    if kind == "real":
        images = data.load_cifar10("test") if size == 32 else data.load_imagenet("val-37", size=size)
        images = images.sample(min(n, len(images)), seed=0)
        x = images.normalized(device)
        if x.shape[0] < n:  # more images asked for than the folder holds: repeat them
            x = x[torch.arange(n) % x.shape[0]]
        return x, f"{images.source}, {n} images"
    pixels = torch.rand((n, 3, size, size), generator=torch.Generator().manual_seed(0))
    return space.normalize(pixels).to(device), f"{n} random images (uniform pixels, seed 0), {space.name} normalisation"


# ----------------------------------------------------------------------------- counting and timing


class Counter:
    """Model inputs entering a model (forward pre-hook): under autograd (``grad``) or not
    (``nograd``), the number of calls and the widest call."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.grad = self.nograd = self.calls = self.widest = 0

    def __call__(self, module, args):
        if args and isinstance(args[0], Tensor):
            n = args[0].shape[0]
            if torch.is_grad_enabled():
                self.grad += n
            else:
                self.nograd += n
            self.calls += 1
            self.widest = max(self.widest, n)


@dataclass
class Config:
    """One timed configuration: ``fn()`` does the whole job for the section's N images.

    ``role``: "ours", "peer" or "reference" (a row that is neither, e.g. the cross-entropy step).
    ``default``: our library default / the peer's default setting. ``model``: the model whose
    inputs are counted (default: the workload's). ``kind``: count every input as this bound kind
    (else: inputs under autograd are "fwd_bwd", the others "fwd")."""

    impl: str
    role: str
    label: str
    fn: Callable[[], object]
    default: bool = False
    settings: dict = field(default_factory=dict)
    model: nn.Module | None = None
    kind: str | None = None
    note: str = ""
    key: str = ""  # names the output for the agreement checks (default: the label)


@dataclass
class Measured:
    config: Config
    output: object
    times: list[float]
    grad: int
    nograd: int
    calls: int
    widest: int
    peak_bytes: int | None


def quiet(fn: Callable[[], object]) -> Callable[[], object]:
    """``fn`` with warnings silenced (peers' advisories, DANCE's unsatisfied-decoy count)."""

    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()

    return call


class Timer:
    """Warm-up runs (which also count model inputs and give the outputs the agreement checks use),
    then ``repeats`` interleaved rounds: round r runs every configuration once, odd rounds in reverse
    order, so a drift of the machine's load shifts all of them alike. On CUDA the device is
    synchronised around each run and the peak memory above the memory allocated before it is kept."""

    def __init__(self, device: torch.device, repeats: int, warmup: int = 1):
        self.device, self.repeats, self.warmup = device, repeats, warmup

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def once(self, fn: Callable[[], object]) -> tuple[float, object, int | None]:
        peak = None
        if self.device.type == "cuda":
            self.sync()
            before = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        self.sync()
        start = time.perf_counter()
        out = fn()
        self.sync()
        seconds = time.perf_counter() - start
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device) - before
        return seconds, out, peak

    def rounds(self, fns: list[Callable[[], object]], keep_first: bool = False):
        """Times of each fn over the rounds; with ``keep_first`` also each fn's first output."""
        times: list[list[float]] = [[] for _ in fns]
        peaks: list[int | None] = [None] * len(fns)
        firsts: list[object] = [None] * len(fns)
        for r in range(self.repeats):
            order = list(range(len(fns)))
            for i in order if r % 2 == 0 else order[::-1]:
                seconds, out, peak = self.once(fns[i])
                times[i].append(seconds)
                if peak is not None:
                    peaks[i] = max(peaks[i] or 0, peak)
                if keep_first and r == 0:
                    firsts[i] = out
                del out
        return times, peaks, firsts

    def measure(self, configs: list[Config], default_model: nn.Module, log=None) -> list[Measured]:
        """Warm up and count each configuration, then time them all in interleaved rounds."""
        counter = Counter()
        models = {id(c.model or default_model): c.model or default_model for c in configs}
        handles = [m.register_forward_pre_hook(counter) for m in models.values()]
        try:
            fns = [quiet(c.fn) for c in configs]
            counts, outputs = [], []
            for c, fn in zip(configs, fns):
                counter.reset()
                out = None
                for _ in range(self.warmup):
                    counter.reset()
                    _, out, _ = self.once(fn)
                counts.append((counter.grad, counter.nograd, counter.calls, counter.widest))
                outputs.append(out)
                if log and self.warmup:
                    log(f"    warm-up {c.impl} [{c.label}]: {(counter.grad + counter.nograd)} model inputs")
            if not self.warmup:  # the first round counts and gives the outputs
                counted: list[tuple[int, int, int, int]] = []

                def counting(fn):
                    def run():
                        counter.reset()
                        out = fn()
                        counted.append((counter.grad, counter.nograd, counter.calls, counter.widest))
                        return out
                    return run

                fns = [counting(fn) for fn in fns]
                times, peaks, outputs = self.rounds(fns, keep_first=True)
                order = list(range(len(fns)))  # round 0 ran in order
                counts = [counted[i] for i in order]
            else:
                times, peaks, _ = self.rounds(fns)
        finally:
            for h in handles:
                h.remove()
        return [Measured(c, out, t, *n, p) for c, out, t, n, p in zip(configs, outputs, times, counts, peaks)]


# ----------------------------------------------------------------------------- the bound sweep


def plain_passes(model: nn.Module, pool: Tensor, kind: str, batch: int, total: int,
                 classes: int) -> Callable[[], None]:
    """``total`` model inputs of one bound ``kind`` in passes of ``batch``, on inputs that are not
    the explained ones (the cost does not depend on them)."""
    sizes = [batch] * (total // batch) + ([total % batch] if total % batch else [])
    labels = torch.arange(batch, device=pool.device) % classes

    def run():
        for b in sizes:
            x, y = pool[:b], labels[:b]
            if kind == "fwd":
                with torch.no_grad():
                    model(x)
            elif kind == "fwd_bwd":
                leaf = x.detach().requires_grad_(True)
                torch.autograd.grad(model(leaf).gather(1, y[:, None]).sum(), leaf)
            elif kind == "train":
                F.cross_entropy(model(x), y).backward()
                model.zero_grad(set_to_none=True)
            elif kind == "double_backprop":
                clean = x.detach().requires_grad_(True)
                logits = model(clean)
                (g,) = torch.autograd.grad(logits.gather(1, y[:, None]).sum(), clean, retain_graph=True)
                near = (pool[-b:] if pool.shape[0] >= 2 * b else x + 0.01).detach().requires_grad_(True)
                (g_near,) = torch.autograd.grad(model(near).gather(1, y[:, None]).sum(), near, create_graph=True)
                (F.cross_entropy(logits, y) + (g.detach() - g_near).square().sum()).backward()
                model.zero_grad(set_to_none=True)
            else:
                raise ValueError(f"unknown bound kind {kind!r}")

    return run


# model inputs per timed unit of each kind (an l2 step example takes two)
INPUTS_PER_UNIT = {"fwd_bwd": 1, "fwd": 1, "double_backprop": 2, "train": 1}


def sweep(models: dict[str, nn.Module], kinds: dict[str, list[int]], rows: dict[str, int], shape,
          space, device, timer: Timer, log=None) -> dict[str, dict]:
    """The bound: seconds per model input of each kind at each batch size, timed in interleaved
    rounds; the best batch size of each kind. ``models[kind]``: the model it runs on (the training
    kinds run on the training model, in train mode); ``kinds[kind]``: batch sizes; ``rows[kind]``:
    examples per measurement (rounded up to whole batches)."""
    biggest = max(max(sizes) for sizes in kinds.values())
    generator = torch.Generator().manual_seed(1)
    pool = space.normalize(torch.rand((2 * biggest, *shape), generator=generator)).to(device)
    plan, fns = [], []
    for kind, sizes in kinds.items():
        model = models[kind]
        with torch.no_grad():
            classes = model(pool[:1]).shape[1]
        for b in sizes:
            total = b * max(1, math.ceil(rows[kind] / b))
            plan.append((kind, b, total))
            fns.append(plain_passes(model, pool, kind, b, total, classes))
    for fn in fns:
        for _ in range(max(1, timer.warmup)):
            timer.once(fn)
    times, _, _ = timer.rounds(fns)
    result: dict[str, dict] = {}
    for (kind, b, total), t in zip(plan, times):
        entry = result.setdefault(kind, {"what": KINDS[kind], "seconds_per_pass_by_batch": {}, "times": {}})
        per_pass = statistics.median(t) / (total * INPUTS_PER_UNIT[kind])
        entry["seconds_per_pass_by_batch"][str(b)] = per_pass
        entry["times"][str(b)] = t
    for kind, entry in result.items():
        by_batch = entry["seconds_per_pass_by_batch"]
        best = min(by_batch, key=by_batch.get)
        entry["best_batch"], entry["best_seconds_per_pass"] = int(best), by_batch[best]
        if log:
            log(f"  [bound] {kind}: " + ", ".join(f"b{b} {v * 1e3:.3g} ms" for b, v in by_batch.items())
                + f"; best batch {best}")
    return result


# ----------------------------------------------------------------------------- ratios


def bound_seconds(passes_by_kind: dict[str, float], per_pass: dict[str, float]) -> float:
    """Seconds per explained image of the plain passes a row made: sum over kinds of passes per
    image x the best seconds per pass of that kind."""
    return sum(p * per_pass[k] for k, p in passes_by_kind.items() if p)


def x_bound(seconds_per_image: float | None, passes_by_kind: dict[str, float],
            per_pass: dict[str, float]) -> float | None:
    """``seconds per explained image / (passes per image x bound seconds per pass)``, summed over
    the kinds of passes the row made. 1.0 is the cost of the model passes themselves."""
    if seconds_per_image is None:
        return None
    bound = bound_seconds(passes_by_kind, per_pass)
    return seconds_per_image / bound if bound > 0 else None


def passes_by_kind(m: Measured, n: int) -> dict[str, float]:
    if m.config.kind is not None:
        return {m.config.kind: (m.grad + m.nograd) / n}
    return {k: v / n for k, v in (("fwd_bwd", m.grad), ("fwd", m.nograd)) if v}


def add_ratios(rows: list[dict]) -> None:
    """``peer_over_ours`` on every peer row: its time / our default's time (ours best when our
    default did not run). Above 1: we are faster by that factor."""
    ours = [r for r in rows if r["role"] == "ours" and r["seconds_per_image"] is not None]
    reference = next((r for r in ours if r["default"]), None) or min(
        ours, key=lambda r: r["seconds_per_image"], default=None)
    for r in rows:
        r["peer_over_ours"] = (r["seconds_per_image"] / reference["seconds_per_image"]
                               if r["role"] == "peer" and reference and r["seconds_per_image"] else None)
    for impl in {r["impl"] for r in rows if r["role"] in ("ours", "peer")}:
        timed = [r for r in rows if r["impl"] == impl and r["role"] in ("ours", "peer")
                 and r["seconds_per_image"] is not None]
        for r in timed:
            r["best"] = r is min(timed, key=lambda r: r["seconds_per_image"])


# ----------------------------------------------------------------------------- agreement


def map_agreement(ours: Tensor, reference: Tensor, ours64: Tensor | None, reference64: Tensor | None,
                  against: str) -> dict:
    """Ours against a peer's maps, deterministic: the timed float32 outputs image by image (at
    least MIN_MATCHING of the images within MAP_RTOL of their largest value), and a float64 rerun
    of a few images (within MAP_RTOL_64) when given."""
    ours, reference = ours.detach().float().cpu().flatten(1), reference.detach().float().cpu().flatten(1)
    if ours.shape != reference.shape:
        return {"kind": "deterministic", "against": against, "ok": False,
                "problem": f"shapes differ: {tuple(ours.shape)} vs {tuple(reference.shape)}"}
    scale = reference.abs().amax(1)
    relative = (ours - reference).abs().amax(1) / scale
    relative = torch.where(scale > 0, relative, torch.where((ours == 0).all(1), 0.0, float("inf")))
    matching = float((relative <= MAP_RTOL).double().mean())
    report = {"kind": "deterministic", "against": against, "float32_images_matching": matching,
              "float32_max_relative_diff": float(relative.max()),
              "tolerance": f"float32: >= {MIN_MATCHING:.0%} of images within {MAP_RTOL:g} of their max"}
    ok = matching >= MIN_MATCHING
    if ours64 is not None:
        o64, r64 = ours64.detach().cpu().flatten(1), reference64.detach().cpu().flatten(1)
        scale64 = float(r64.abs().max())
        diff64 = float((o64 - r64).abs().max()) / scale64 if scale64 > 0 else float("inf")
        report.update(float64_images=o64.shape[0], float64_max_relative_diff=diff64)
        report["tolerance"] += f"; float64: within {MAP_RTOL_64:g}"
        ok = ok and diff64 <= MAP_RTOL_64
    report["ok"] = bool(ok)
    return report


def curve_agreement(ours: Tensor, reference: Tensor, against: str) -> dict:
    diff = float((ours.detach().double().cpu() - reference.detach().double().cpu()).abs().max())
    return {"kind": "deterministic", "against": against, "max_abs_diff": diff, "tolerance": CURVE_ATOL,
            "ok": diff <= CURVE_ATOL}


def budget_agreement(ours: Tensor, reference: Tensor, tolerance: float, against: str) -> dict:
    """Paper C's four budgets per image (N, 4): equal within the search's tolerance (inf = inf,
    NaN = NaN) on at least MIN_MATCHING of the images."""
    a, b = ours.detach().double().cpu(), reference.detach().double().cpu()
    same = ((a - b).abs() <= tolerance) | (a == b) | (a.isnan() & b.isnan())
    matching = float(same.all(1).double().mean())
    return {"kind": "deterministic", "against": against, "images_matching": matching,
            "tolerance": f">= {MIN_MATCHING:.0%} of images with all four budgets within {tolerance:.3g}",
            "ok": matching >= MIN_MATCHING}


def mean_cosine(a: Tensor, b: Tensor) -> float:
    return float(map_functions.cosine(a.detach().float().cpu(), b.detach().float().cpu()).nanmean())


def monte_carlo(ours: Tensor, peer: Tensor | None, ours_other_seed: Tensor, against: str) -> dict:
    """A Monte-Carlo method cannot match sample by sample: the cosine between our map and the
    peer's, beside the cosine between two of our runs with different seeds (the noise level)."""
    report = {"kind": "monte-carlo (report only)", "against": against,
              "cosine_ours_vs_ours_other_seed": mean_cosine(ours, ours_other_seed)}
    if peer is not None:
        report["cosine_ours_vs_peer"] = mean_cosine(ours, peer)
    return report


def float64_copy(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).double()
