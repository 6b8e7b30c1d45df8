"""Time reliable_saliency side by side with captum and Quantus, against a forward/backward bound.

Run from the repository root::

    python -m benchmarks.compare_peers [--device cpu|cuda] [--images N] [--repeats R]
        [--model lenet|resnet18] [--data auto|random|cifar10] [--out benchmarks/results/NAME.json]
        [--sections gradient,smoothgrad,...] [--threads T] [--max-rows M] [--quick]

Every method runs on the same model and the same inputs in one process. Each configuration is run
once to warm up (that run also counts the model inputs it evaluates and gives the output used for
the agreement checks); then all configurations of a section, its bound included, are timed in
``--repeats`` interleaved rounds and the median is reported. On CUDA the device is synchronised
before the clock is read. ``torch.set_num_threads`` is left as it is unless ``--threads`` is given.

Prints a markdown table and writes a JSON file (atomically) with the machine, the sizes and all
numbers. Exits with status 1 if a deterministic agreement check fails (ours vs captum for the
gradient and Integrated Gradients, timed float32 outputs and a float64 rerun; ours vs Quantus for
the deletion curve), so a fast but wrong result cannot look good. See benchmarks/README.md for
how to read the ratios.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

from reliable_saliency import evaluation, explainers, maps
from reliable_saliency.core.batching import resolve_batch_size
from reliable_saliency.core.inputs import CIFAR10
from reliable_saliency.maps import postprocess
from reliable_saliency.models import build

SECTIONS = ("gradient", "smoothgrad", "integrated_gradients", "max_sensitivity", "deletion")
GRADIENT_FAMILY = ("gradient", "smoothgrad", "integrated_gradients")
BOUND_BATCH_SIZES = (8, 16, 32, 64, 128, 256, 512)
# Most model inputs put into one pass by any configuration (captum's "all at once" defaults can
# ask for N * samples inputs); larger ones are skipped and reported. CPU values; x4 on CUDA.
MAX_ROWS = {"lenet": 8192, "resnet18": 1024}
RESULTS_DIR = Path(__file__).resolve().parent / "results"
SCHEMA = 1

# Deterministic agreement (see _map_agreement): per image, max |ours - reference| <= MAP_RTOL *
# max |reference| for at least MIN_MATCHING of the images in float32, and <= MAP_RTOL_64 on a
# float64 rerun; deletion curves within CURVE_ATOL in probability.
MAP_RTOL = 1e-4
# Not 0.9: captum takes IG path positions from a float32 linspace, which can move a point across a
# ReLU / max-pool switch; on real CIFAR-10 images 83% of images matched in float32 while float64
# agreed to 2e-8. A wrong method differs on (nearly) every image, so a majority still catches it.
MIN_MATCHING = 0.5
MAP_RTOL_64 = 1e-6
CURVE_ATOL = 1e-4
# Targets from benchmarks/README.md.
TARGET_CAPTUM = 1.0  # captum best / ours default >= 1: never slower than captum
TARGET_QUANTUS = 10.0  # quantus best / ours default >= 10
TARGET_BOUND = 1.3  # ours default / bound <= 1.3 for the gradient family
TIE = 0.03  # a target missed by less than 3% is reported as "within noise", not as met


@dataclass
class Sizes:
    images: int
    repeats: int
    smoothgrad_samples: int = 50
    noise_level: float = 0.15
    ig_steps: int = 50
    sensitivity_samples: int = 10
    sensitivity_radius: float = 0.02
    deletion_steps: int = 32
    bound_batch_sizes: tuple[int, ...] = BOUND_BATCH_SIZES
    bound_rows: int = 512  # model inputs per bound measurement (several batches for small sizes)
    max_rows: int = 8192


def quick_sizes(images: int | None, repeats: int | None) -> dict:
    return dict(
        images=images or 4, repeats=repeats or 1, smoothgrad_samples=5, ig_steps=5,
        sensitivity_samples=3, deletion_steps=8, bound_batch_sizes=(8, 16, 32), bound_rows=32,
    )


# ----------------------------------------------------------------------------- machine and data


def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "device": str(device),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "loadavg_start": _loadavg(),
    }
    for name in ("captum", "quantus"):
        try:
            info[name] = __import__(name).__version__
        except Exception as error:  # reported, not fatal: the section using it will fail loudly
            info[name] = f"unavailable ({error})"
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def load_inputs(kind: str, n: int, device: torch.device) -> tuple[torch.Tensor, str]:
    """(N, 3, 32, 32) normalised CIFAR-10-space inputs and a description of where they came from."""
    from reliable_saliency import data

    if kind == "auto":
        kind = "cifar10" if os.environ.get(data.DATA_ENV) else "random"
    if kind == "cifar10":
        images = data.load_cifar10("test").sample(n, seed=0)
        return images.normalized(device), f"{n} CIFAR-10 test images: {images.source}"
    generator = torch.Generator().manual_seed(0)
    pixels = torch.rand((n, 3, 32, 32), generator=generator)
    return CIFAR10.normalize(pixels).to(device), (
        f"{n} random images (uniform pixels in [0, 1], seed 0), CIFAR-10 normalisation"
    )


# ----------------------------------------------------------------------------- timing


@dataclass
class Config:
    """One timed configuration: ``fn()`` runs the whole job for the N images."""

    impl: str  # "ours", "captum ...", "quantus ...", "bound"
    label: str
    config: dict
    fn: Callable[[], object]
    default: bool = False
    rows_per_pass: int = 0  # most model inputs in one pass, for --max-rows
    quiet: bool = False  # silence the UserWarnings of a peer


class Timer:
    """Warm-up runs that count model inputs, then interleaved timed runs.

    All configurations of a section are timed in rounds (round r runs every configuration once,
    in reverse order on odd rounds), so a slow drift of the machine's load affects them alike.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, repeats: int):
        self.model, self.device, self.repeats = model, device, repeats

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def warm_up(self, fn: Callable[[], object]) -> tuple[object, int]:
        rows = [0]

        def count(module, args):
            if args and isinstance(args[0], torch.Tensor):
                rows[0] += args[0].shape[0]

        handle = self.model.register_forward_pre_hook(count)
        try:
            out = fn()
            self.sync()
        finally:
            handle.remove()
        return out, rows[0]

    def once(self, fn: Callable[[], object]) -> float:
        self.sync()
        start = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - start

    def rounds(self, fns: list[Callable[[], object]]) -> list[list[float]]:
        times = [[] for _ in fns]
        for r in range(self.repeats):
            order = list(range(len(fns)))
            for i in order if r % 2 == 0 else order[::-1]:
                times[i].append(self.once(fns[i]))
        return times


def _quiet(fn):
    """Run a peer call with its UserWarnings silenced (captum / Quantus advisories)."""

    def call():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return fn()

    return call


# ----------------------------------------------------------------------------- the benchmark


class Benchmark:
    def __init__(self, model, x, target, device, sizes: Sizes, log=print):
        self.model, self.x, self.target, self.device, self.sizes = model, x, target, device, sizes
        self.n = x.shape[0]
        self.timer = Timer(model, device, sizes.repeats)
        self.rows: list[dict] = []
        self.agreement: dict[str, dict] = {}
        self.bound: dict = {}
        self.log = log
        self.x_np = x.detach().cpu().numpy()
        self.y_np = target.detach().cpu().numpy()
        self.quantus_device = "cuda" if device.type == "cuda" else "cpu"
        pool = torch.rand((max(sizes.bound_batch_sizes), 3, 32, 32), generator=torch.Generator().manual_seed(1))
        self.pool = CIFAR10.normalize(pool).to(device)  # inputs of the bound passes

    # ------------------------------------------------------------------ helpers

    def generator(self, seed: int = 0) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def run_section(self, section: str, configs: list[Config]) -> dict[str, object]:
        """Warm up every configuration (skipping those over --max-rows), time them in rounds, add
        their rows and mark the fastest of each implementation. Returns {label: warm-up output}."""
        outputs, runnable = {}, []
        for c in configs:
            if c.rows_per_pass > self.sizes.max_rows:
                reason = f"{c.rows_per_pass} model inputs in one pass > --max-rows {self.sizes.max_rows}"
                self.rows.append(self._row(section, c, None, None, note=f"skipped: {reason}"))
                self.log(f"  [{section}] {c.impl} {c.label}: skipped ({reason})")
                continue
            fn = _quiet(c.fn) if c.quiet else c.fn
            outputs[c.label], rows = self.timer.warm_up(fn)
            runnable.append((c, fn, rows))
            self.log(f"  [{section}] warm-up {c.impl} {c.label}: {rows / self.n:.4g} passes/image")
        times = self.timer.rounds([fn for _, fn, _ in runnable])
        new_rows = []
        for (c, _, rows), t in zip(runnable, times):
            row = self._row(section, c, t, rows / self.n)
            new_rows.append(row)
            self.log(f"  [{section}] {c.impl} {c.label}: {row['seconds_per_image']:.4g} s/image")
        for impl in {r["impl"] for r in new_rows}:
            min((r for r in new_rows if r["impl"] == impl), key=lambda r: r["seconds_per_image"])["best"] = True
        self.rows += new_rows
        return outputs

    def _row(self, section, c: Config, times, passes, note=None) -> dict:
        row = {
            "section": section, "impl": c.impl, "label": c.label, "config": c.config, "default": c.default,
            "best": False, "seconds_per_image": None if times is None else statistics.median(times) / self.n,
            "times_per_image": [] if times is None else [t / self.n for t in times], "passes_per_image": passes,
        }
        if note:
            row["note"] = note
        return row

    def plain_passes(self, batch_size: int, total: int, forward_only: bool) -> Callable[[], None]:
        """``total`` plain passes (fwd+bwd w.r.t. the input, or forward only) in batches of
        ``batch_size``, on inputs that are not the explained ones (the cost does not depend on them)."""
        sizes = [batch_size] * (total // batch_size) + ([total % batch_size] if total % batch_size else [])
        target = torch.zeros(batch_size, dtype=torch.long, device=self.device)

        def run():
            for b in sizes:
                if forward_only:
                    with torch.no_grad():
                        self.model(self.pool[:b])
                else:
                    inputs = self.pool[:b].detach().requires_grad_(True)
                    score = self.model(inputs).gather(1, target[:b, None]).sum()
                    torch.autograd.grad(score, inputs)

        return run

    def bound_config(self, passes: int, forward_only: bool = False) -> Config:
        """The section's bound, timed in the same rounds as the section: ``passes`` plain passes per
        image at the best batch size."""
        b = self.best_b_fwd if forward_only else self.best_b
        kind = "forward" if forward_only else "fwd+bwd"
        return Config("bound", f"{passes} {kind} passes/image at batch {b}",
                      {"passes": passes, "batch_size": b, "forward_only": forward_only},
                      self.plain_passes(b, self.n * passes, forward_only), default=True, rows_per_pass=b)

    def ours_batch_sizes(self, best: int) -> list[tuple[int | None, bool]]:
        """Our default (None) and the bound's best batch size where it differs from the default."""
        sizes = [(None, True)]
        if best != resolve_batch_size(None, self.x):
            sizes.append((best, False))
        return sizes

    def ours_configs(self, make: Callable[[int | None], Callable[[], object]], extra: dict,
                     best: int | None = None) -> list[Config]:
        configs = []
        for bs, is_default in self.ours_batch_sizes(self.best_b if best is None else best):
            label = "batch_size=None (default)" if bs is None else f"batch_size={bs}"
            rows = resolve_batch_size(bs, self.x)
            configs.append(Config("ours", label, {"batch_size": bs, **extra}, make(bs), is_default, rows))
        return configs

    def exact_check(self, images: int = 8) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
        """A float64 copy of the model and the first images, for exact agreement checks."""
        model = copy.deepcopy(self.model).double()
        return model, self.x[:images].double(), self.target[:images]

    # ------------------------------------------------------------------ 1. the bound

    def run_bound(self):
        self.log("[bound] plain passes at each batch size")
        sizes = [b for b in self.sizes.bound_batch_sizes if b <= self.sizes.max_rows]
        fns = []
        for b in sizes:
            total = b * max(1, math.ceil(self.sizes.bound_rows / b))
            fns += [self.plain_passes(b, total, False), self.plain_passes(b, total, True)]
        for fn in fns:
            self.timer.warm_up(fn)
        times = self.timer.rounds(fns)
        for name, offset in (("fwd_bwd", 0), ("fwd", 1)):
            per_image = {}
            for i, b in enumerate(sizes):
                total = b * max(1, math.ceil(self.sizes.bound_rows / b))
                per_image[b] = statistics.median(times[2 * i + offset]) / total
            best = min(per_image, key=per_image.get)
            self.bound[name] = {
                "seconds_per_image_by_batch_size": {str(k): v for k, v in per_image.items()},
                "best_batch_size": best, "best_seconds_per_image": per_image[best],
            }
        by_size = {name: self.bound[name]["seconds_per_image_by_batch_size"] for name in ("fwd_bwd", "fwd")}
        for b in sizes:
            self.log(f"  [bound] batch {b}: fwd+bwd {by_size['fwd_bwd'][str(b)]:.4g} s/image, "
                     f"fwd {by_size['fwd'][str(b)]:.4g} s/image")
        self.best_b = self.bound["fwd_bwd"]["best_batch_size"]
        self.best_b_fwd = self.bound["fwd"]["best_batch_size"]
        self.log(f"  [bound] best: fwd+bwd batch {self.best_b}, fwd batch {self.best_b_fwd}")

    # ------------------------------------------------------------------ 2. gradient

    def run_gradient(self):
        from captum.attr import Saliency

        section, x, t = "gradient", self.x, self.target
        self.log(f"[{section}] 1 pass/image")
        configs = self.ours_configs(
            lambda bs: lambda: explainers.gradient(self.model, x, t, batch_size=bs), {})
        saliency = Saliency(self.model)

        def captum_chunks(b):
            def run():
                pieces = [saliency.attribute(x[a:a + b].detach(), target=t[a:a + b], abs=False)
                          for a in range(0, self.n, b)]
                return torch.cat(pieces)
            return run

        impl = "captum Saliency(abs=False)"
        configs.append(Config(impl, "all images in one call (default)", {"chunk": None}, captum_chunks(self.n),
                              True, self.n, quiet=True))
        if self.best_b < self.n:
            configs.append(Config(impl, f"chunks of {self.best_b} images", {"chunk": self.best_b},
                                  captum_chunks(self.best_b), False, self.best_b, quiet=True))
        configs.append(self.bound_config(1))
        out = self.run_section(section, configs)
        peers = [out[c.label] for c in configs if c.impl == impl and c.label in out]
        m64, x64, t64 = self.exact_check()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exact = (explainers.gradient(m64, x64, t64),
                     Saliency(m64).attribute(x64.clone(), target=t64, abs=False))
        if peers:
            self.agreement[section] = _map_agreement(out["batch_size=None (default)"], peers[0], *exact,
                                                     "captum Saliency")

    # ------------------------------------------------------------------ 3. SmoothGrad

    def run_smoothgrad(self):
        from captum.attr import NoiseTunnel, Saliency

        section, x, t, s = "smoothgrad", self.x, self.target, self.sizes.smoothgrad_samples
        level = self.sizes.noise_level
        self.log(f"[{section}] {s} samples/image, noise level {level}")
        configs = self.ours_configs(
            lambda bs: lambda: explainers.smoothgrad(self.model, x, t, samples=s, noise_level=level,
                                                     generator=self.generator(0), batch_size=bs),
            {"samples": s, "noise_level": level})
        # captum's stdevs is one absolute std for the whole batch: the mean of our per-image
        # sigma = noise_level * (max x_i - min x_i). Only the noise differs, not the work.
        flat = x.flatten(1)
        stdev = float((level * (flat.amax(1) - flat.amin(1))).mean())
        tunnel = NoiseTunnel(Saliency(self.model))

        def captum_run(nt_bs):
            return lambda: tunnel.attribute(x.detach(), nt_type="smoothgrad", nt_samples=s,
                                            nt_samples_batch_size=nt_bs, stdevs=stdev, target=t, abs=False)

        impl = "captum NoiseTunnel(Saliency)"
        configs.append(Config(impl, "nt_samples_batch_size=None (default)",
                              {"nt_samples_batch_size": None, "stdevs": stdev}, captum_run(None), True,
                              s * self.n, quiet=True))
        for k in sorted({k for k in (5, 10, 25, max(1, self.best_b // self.n)) if k < s}):
            configs.append(Config(impl, f"nt_samples_batch_size={k}", {"nt_samples_batch_size": k, "stdevs": stdev},
                                  captum_run(k), False, k * self.n, quiet=True))
        configs.append(self.bound_config(s))
        out = self.run_section(section, configs)
        ours = out["batch_size=None (default)"]
        reference = explainers.smoothgrad(self.model, x, t, samples=s, noise_level=level, generator=self.generator(1))
        report = {"kind": "monte-carlo (report only)",
                  "cosine ours vs ours (another seed)": _mean_cosine(ours, reference)}
        peers = [out[c.label] for c in configs if c.impl == impl and c.label in out]
        if peers:
            report["cosine ours vs captum"] = _mean_cosine(ours, peers[0])
        self.agreement[section] = report

    # ------------------------------------------------------------------ 4. Integrated Gradients

    def run_integrated_gradients(self):
        from captum.attr import IntegratedGradients

        section, x, t, s = "integrated_gradients", self.x, self.target, self.sizes.ig_steps
        self.log(f"[{section}] {s} steps/image, midpoint rule (captum riemann_middle), zero baseline")

        def ours(model, inputs, target, bs=None):
            return explainers.integrated_gradients(model, inputs, target, steps=s, method="midpoint",
                                                   baseline="zero", batch_size=bs)

        configs = self.ours_configs(lambda bs: lambda: ours(self.model, x, t, bs), {"steps": s, "method": "midpoint"})
        ig = IntegratedGradients(self.model)

        def captum_run(ibs):
            return lambda: ig.attribute(x.detach(), baselines=None, target=t, n_steps=s,
                                        method="riemann_middle", internal_batch_size=ibs)

        impl = "captum IntegratedGradients"
        configs.append(Config(impl, "internal_batch_size=None (default)", {"internal_batch_size": None},
                              captum_run(None), True, s * self.n, quiet=True))
        # captum cuts the steps into chunks of internal_batch_size // N steps (at least 2)
        for k in sorted({k for k in (2, 5, 10, 25, max(2, self.best_b // self.n)) if k < s}):
            configs.append(Config(impl, f"internal_batch_size={k * self.n} ({k} steps/pass)",
                                  {"internal_batch_size": k * self.n}, captum_run(k * self.n), False, k * self.n,
                                  quiet=True))
        configs.append(self.bound_config(s))
        out = self.run_section(section, configs)
        peers = [out[c.label] for c in configs if c.impl == impl and c.label in out]
        m64, x64, t64 = self.exact_check()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            exact = (ours(m64, x64, t64), IntegratedGradients(m64).attribute(
                x64, target=t64, n_steps=s, method="riemann_middle"))
        if peers:
            self.agreement[section] = _map_agreement(out["batch_size=None (default)"], peers[0], *exact,
                                                     "captum IntegratedGradients")

    # ------------------------------------------------------------------ 5. max-sensitivity

    def run_max_sensitivity(self):
        import quantus
        from captum.attr import Saliency
        from captum.metrics import sensitivity_max

        section, x, t = "max_sensitivity", self.x, self.target
        s, r = self.sizes.sensitivity_samples, self.sizes.sensitivity_radius
        self.log(f"[{section}] {s} samples, L-inf radius {r} (normalised units), gradient explainer")
        configs = self.ours_configs(
            lambda bs: lambda: evaluation.max_sensitivity(explainers.gradient, self.model, x, t, radius=r, samples=s,
                                                       generator=self.generator(0), batch_size=bs),
            {"radius": r, "samples": s})
        saliency = Saliency(self.model)

        def captum_explain(inputs, target):  # captum calls it under no_grad
            with torch.enable_grad():
                return saliency.attribute(inputs, target=target, abs=False)

        def captum_run(mepb):
            return lambda: sensitivity_max(captum_explain, x.detach(), perturb_radius=r, n_perturb_samples=s,
                                           max_examples_per_batch=mepb, target=t)

        captum_impl = "captum sensitivity_max(Saliency)"
        configs.append(Config(captum_impl, "max_examples_per_batch=None (default)", {"max_examples_per_batch": None},
                              captum_run(None), True, s * self.n, quiet=True))
        k = max(1, self.best_b // self.n)
        if k < s:
            configs.append(Config(captum_impl, f"max_examples_per_batch={k * self.n} ({k} samples/pass)",
                                  {"max_examples_per_batch": k * self.n}, captum_run(k * self.n), False, k * self.n,
                                  quiet=True))

        def quantus_run(batch):
            def run():
                metric = quantus.MaxSensitivity(nr_samples=s, lower_bound=r, abs=False, normalise=False,
                                                disable_warnings=True, display_progressbar=False)
                return np.asarray(metric(
                    model=self.model, x_batch=self.x_np, y_batch=self.y_np, a_batch=None,
                    explain_func=quantus.explain,
                    explain_func_kwargs={"method": "Gradient", "reduce_axes": ()},
                    device=self.quantus_device, batch_size=batch))
            return run

        quantus_impl = "quantus MaxSensitivity(explain Gradient)"
        default_batch = min(64, self.n)
        for b in sorted({default_batch, min(self.best_b, self.n)}):
            configs.append(Config(quantus_impl, f"batch_size={b}" + (" (default)" if b == default_batch else ""),
                                  {"batch_size": b}, quantus_run(b), b == default_batch, b, quiet=True))
        configs.append(self.bound_config(s + 1))
        out = self.run_section(section, configs)
        report = {"kind": "monte-carlo (report only)", "mean ours": float(out["batch_size=None (default)"].nanmean())}
        for name, impl in (("captum", captum_impl), ("quantus", quantus_impl)):
            values = [out[c.label] for c in configs if c.impl == impl and c.label in out]
            if values:
                report[f"mean {name}"] = float(np.nanmean(np.asarray(values[0])))
        self.agreement[section] = report

    # ------------------------------------------------------------------ 6. deletion / pixel flipping

    def run_deletion(self):
        import quantus

        section, x, t, k = "deletion", self.x, self.target, self.sizes.deletion_steps
        c, h, w = x.shape[1:]
        if (h * w) % k:
            raise ValueError(f"deletion steps {k} must divide the {h * w} pixels (Quantus flips equal steps)")
        self.log(f"[{section}] {k} steps of {h * w // k} pixels, zero substrate, maps |gradient| summed over channels")
        maps = postprocess.channel_sum(postprocess.absolute(explainers.gradient(self.model, x, t))).detach()
        maps_np = maps.unsqueeze(1).cpu().numpy()  # Quantus broadcasts (N, 1, H, W) over channels
        # Quantus flips `features_in_step` entries of the flattened (C, H, W) input per step, but
        # asserts that features_in_step divides H * W (not C * H * W). Whole-pixel steps (C * H * W / k
        # entries) are therefore rejected for RGB 32x32 images; the closest equivalent is C * k steps
        # of H * W / k entries: the C entries of a pixel tie in the broadcast map and are adjacent
        # in its ranking, so every C-th Quantus point is one of our k curve points.
        per_step = h * w // k
        configs = []
        ours_sizes = [(None, True)] + ([(self.best_b_fwd, False)] if self.best_b_fwd < self.n * (k + 1) else [])
        for bs, is_default in ours_sizes:
            label = "batch_size=None (default)" if bs is None else f"batch_size={bs}"
            configs.append(Config(
                "ours", label, {"batch_size": bs, "steps": k},
                lambda bs=bs: evaluation.deletion_auc(self.model, x, maps, t, substrate="zero", steps=k,
                                                   batch_size=bs, return_curve=True),
                is_default, self.n * (k + 1) if bs is None else bs))

        def quantus_run(batch):
            def run():
                metric = quantus.PixelFlipping(features_in_step=per_step, perturb_baseline=0.0, abs=False,
                                               normalise=False, disable_warnings=True, display_progressbar=False)
                return np.asarray(metric(model=self.model, x_batch=self.x_np, y_batch=self.y_np, a_batch=maps_np,
                                         softmax=True, device=self.quantus_device, batch_size=batch))
            return run

        impl = "quantus PixelFlipping"
        default_batch = min(64, self.n)
        for b in sorted({default_batch, min(self.best_b_fwd, self.n)}):
            configs.append(Config(impl, f"batch_size={b}" + (" (default)" if b == default_batch else ""),
                                  {"batch_size": b, "features_in_step": per_step, "quantus_steps": c * k},
                                  quantus_run(b), b == default_batch, b, quiet=True))
        configs.append(self.bound_config(k + 1, forward_only=True))
        out = self.run_section(section, configs)
        ours = [out[cf.label] for cf in configs if cf.impl == "ours" and cf.label in out]
        peers = [out[cf.label] for cf in configs if cf.impl == impl and cf.label in out]
        if ours and peers:
            _, curve = ours[0]
            reference = torch.as_tensor(peers[0], dtype=curve.dtype)
            diff = float((curve[:, 1:].cpu() - reference[:, c - 1::c]).abs().max())
            self.agreement[section] = {
                "kind": "deterministic", "against": f"quantus PixelFlipping curve (points {c}, {2 * c}, ...)",
                "max_abs_diff": diff, "tolerance": CURVE_ATOL, "ok": diff <= CURVE_ATOL,
            }


def _map_agreement(ours, reference, ours64, reference64, against: str) -> dict:
    """Ours vs a peer's maps: the timed float32 outputs image by image, and a float64 rerun on a few
    images. In float32, IG path points that differ in the last bit (captum rounds its alphas to
    float32) can cross a ReLU / max-pool switch and change a map visibly, so a few images may
    differ; a wrong method differs on all of them. In float64 they must agree to MAP_RTOL_64."""
    ours, reference = ours.detach().float().cpu().flatten(1), reference.detach().float().cpu().flatten(1)
    scale = reference.abs().amax(1)
    relative = (ours - reference).abs().amax(1) / scale
    relative = torch.where(scale > 0, relative, torch.where((ours == 0).all(1), 0.0, float("inf")))
    matching = float((relative <= MAP_RTOL).double().mean())
    ours64, reference64 = ours64.detach().cpu().flatten(1), reference64.detach().cpu().flatten(1)
    scale64 = float(reference64.abs().max())
    diff64 = float((ours64 - reference64).abs().max()) / scale64 if scale64 > 0 else float("inf")
    return {
        "kind": "deterministic", "against": against,
        "float32_images_matching": matching, "float32_median_relative_diff": float(relative.median()),
        "float32_max_relative_diff": float(relative.max()), "float64_images": ours64.shape[0],
        "float64_max_relative_diff": diff64,
        "tolerance": f"float32: >= {MIN_MATCHING:.0%} of images within {MAP_RTOL:g} of their max; "
                     f"float64: within {MAP_RTOL_64:g}",
        "ok": bool(matching >= MIN_MATCHING and diff64 <= MAP_RTOL_64),
    }


def _mean_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(maps.cosine(a.detach().float().cpu(), b.detach().float().cpu()).nanmean())


# ----------------------------------------------------------------------------- ratios and report


def add_ratios(rows: list[dict]) -> None:
    """x bound (every row) and peer / ours (peer rows; ours = our default, else our best)."""
    for section in {r["section"] for r in rows}:
        group = [r for r in rows if r["section"] == section]
        bound = next(r for r in group if r["impl"] == "bound")["seconds_per_image"]
        ours = [r for r in group if r["impl"] == "ours" and r["seconds_per_image"] is not None]
        reference = next((r for r in ours if r["default"]), None) or min(
            ours, key=lambda r: r["seconds_per_image"], default=None)
        for r in group:
            t = r["seconds_per_image"]
            r["x_bound"] = None if t is None else t / bound
            r["peer_over_ours"] = (
                t / reference["seconds_per_image"] if t is not None and reference and r["impl"] not in ("ours", "bound")
                else None
            )


def check_targets(rows: list[dict]) -> list[dict]:
    """The README's targets, against our default settings. ``met``: strictly; ``within_noise``:
    missed by less than TIE (a tie on a timing, not evidence either way)."""
    targets = []

    def best(section, prefix):
        timed = [r for r in rows if r["section"] == section and r["impl"].startswith(prefix)
                 and r["seconds_per_image"] is not None]
        return min(timed, key=lambda r: r["seconds_per_image"], default=None)

    def add(section, target, value, threshold, at_least):
        met = value >= threshold if at_least else value <= threshold
        near = value >= threshold * (1 - TIE) if at_least else value <= threshold * (1 + TIE)
        targets.append({"section": section, "target": target, "value": value, "met": met,
                        "within_noise": near and not met})

    for section in sorted({r["section"] for r in rows}):
        ours = next((r for r in rows if r["section"] == section and r["impl"] == "ours" and r["default"]
                     and r["seconds_per_image"] is not None), None)
        if ours is None:
            continue
        captum, quantus = best(section, "captum"), best(section, "quantus")
        if captum:
            add(section, f"captum best / ours default >= {TARGET_CAPTUM:g}",
                captum["seconds_per_image"] / ours["seconds_per_image"], TARGET_CAPTUM, True)
        if quantus:
            add(section, f"quantus best / ours default >= {TARGET_QUANTUS:g}",
                quantus["seconds_per_image"] / ours["seconds_per_image"], TARGET_QUANTUS, True)
        if section in GRADIENT_FAMILY:
            add(section, f"ours default / bound <= {TARGET_BOUND:g}", ours["x_bound"], TARGET_BOUND, False)
    return targets


def _fmt(value, spec=".3g", none="–"):
    return none if value is None else format(value, spec)


def markdown(result: dict) -> str:
    sizes, bound = result["sizes"], result["bound"]
    lines = [
        f"Model {result['model']} on {result['machine']['device']} "
        f"({result['machine'].get('gpu', result['machine']['cpu'])}, {result['machine']['torch_threads']} threads, "
        f"torch {result['machine']['torch']}); {result['data']}; median of {sizes['repeats']} repeats.",
        f"Bound: fwd+bwd {bound['fwd_bwd']['best_seconds_per_image']:.3g} s/pass at batch "
        f"{bound['fwd_bwd']['best_batch_size']}, fwd {bound['fwd']['best_seconds_per_image']:.3g} s/pass at batch "
        f"{bound['fwd']['best_batch_size']}.",
        "",
        "| section | implementation | setting | s / image | passes / image | × bound | peer / ours |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        if r["impl"] not in ("ours", "bound") and not (r["default"] or r["best"]):
            continue  # other sweep points are in the JSON
        tags = [tag for tag, on in (("best", r["best"] and r["impl"] not in ("ours", "bound")),) if on]
        setting = r["label"] + (f" [{', '.join(tags)}]" if tags else "")
        if r.get("note"):
            setting += f" ({r['note']})"
        lines.append(
            f"| {r['section']} | {r['impl']} | {setting} | {_fmt(r['seconds_per_image'])} | "
            f"{_fmt(r['passes_per_image'], '.4g')} | {_fmt(r['x_bound'], '.2f')} | {_fmt(r['peer_over_ours'], '.2f')} |"
        )
    lines += ["", "| agreement | against | result |", "|---|---|---|"]
    for section, a in result["agreement"].items():
        verdict = "ok" if a.get("ok") else "DISAGREE"
        if "float64_max_relative_diff" in a:
            text = (f"float32: {a['float32_images_matching']:.0%} of images within {MAP_RTOL:g} of their max "
                    f"(worst {a['float32_max_relative_diff']:.1e}); float64 ({a['float64_images']} images): "
                    f"{a['float64_max_relative_diff']:.1e} <= {MAP_RTOL_64:g}: {verdict}")
            lines.append(f"| {section} | {a['against']} | {text} |")
        elif a["kind"] == "deterministic":
            text = f"max abs diff {a['max_abs_diff']:.2e} <= {a['tolerance']:.2e}: {verdict}"
            lines.append(f"| {section} | {a['against']} | {text} |")
        else:
            text = ", ".join(f"{k} {v:.4g}" for k, v in a.items() if k != "kind")
            lines.append(f"| {section} | {a['kind']} | {text} |")
    lines += ["", "| target | section | value | met |", "|---|---|---:|---|"]
    for tgt in result["targets"]:
        verdict = "yes" if tgt["met"] else f"within {TIE:.0%} (noise)" if tgt["within_noise"] else "NO"
        lines.append(f"| {tgt['target']} | {tgt['section']} | {tgt['value']:.2f} | {verdict} |")
    return "\n".join(lines)


def write_json(result: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(result, f, indent=1, allow_nan=True)
        f.write("\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- command line


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare_peers", description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    p.add_argument("--images", type=int, default=None, help="explained images (default 64 on CPU, 256 on CUDA)")
    p.add_argument("--repeats", type=int, default=None, help="timed repeats after one warm-up (default 5)")
    p.add_argument("--model", default="lenet", choices=("lenet", "resnet18"), help="random-init CIFAR model")
    p.add_argument("--data", default="auto", choices=("auto", "random", "cifar10"),
                   help="auto: CIFAR-10 test images if $RELIABLE_SALIENCY_DATA is set, else random images")
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--max-rows", type=int, default=None,
                   help="skip configurations that put more model inputs in one pass "
                        "(default 8192 for lenet, 1024 for resnet18; x4 on CUDA)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the run (default: left as it is). On a machine shared with "
                        "other jobs, 1 avoids OpenMP threads waiting on each other")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default benchmarks/results/<model>-<device>-<time>.json)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (4 images, 5 samples/steps, 1 repeat) for tests")
    args = p.parse_args(argv)
    sections = [s for s in args.sections.split(",") if s]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        p.error(f"unknown sections {unknown}; choose from {SECTIONS}")
    args.sections = [s for s in SECTIONS if s in sections]
    for name in ("images", "repeats", "max_rows", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        device = torch.device(args.device)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        print(f"--device must be cpu or cuda (or cuda:N), got {args.device!r}", file=sys.stderr)
        return 2
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda asked for, but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.quick:
        sizes = Sizes(**quick_sizes(args.images, args.repeats))
    else:
        sizes = Sizes(images=args.images or (256 if device.type == "cuda" else 64), repeats=args.repeats or 5)
    sizes.max_rows = args.max_rows or MAX_ROWS[args.model] * (4 if device.type == "cuda" else 1)

    threads = torch.get_num_threads()
    numpy_state = np.random.get_state()
    cuda_devices = [device] if device.type == "cuda" else []
    # Seeds, thread count and RNG states are restored afterwards, so an in-process call (the
    # test) leaves the global state of the caller as it was.
    try:
        with torch.random.fork_rng(devices=cuda_devices):
            if args.threads is not None:
                torch.set_num_threads(args.threads)
            result, out = run(args, device, sizes, argv)
    finally:
        torch.set_num_threads(threads)
        np.random.set_state(numpy_state)
    print(markdown(result))
    _log(f"wrote {out}")
    disagree = sorted(s for s, a in result["agreement"].items() if a["kind"] == "deterministic" and not a["ok"])
    if disagree:
        _log(f"AGREEMENT FAILED in {disagree}: the timings of those sections do not count")
        return 1
    return 0


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(args, device: torch.device, sizes: Sizes, argv) -> tuple[dict, Path]:
    torch.manual_seed(0)
    np.random.seed(0)
    model = build(args.model).to(device).eval()
    x, data_source = load_inputs(args.data, sizes.images, device)
    with torch.no_grad():
        target = model(x).argmax(1)
    _log(f"compare_peers: {args.model} on {device}, {data_source}, repeats {sizes.repeats}, "
         f"torch threads {torch.get_num_threads()}")
    machine = machine_info(device)
    machine["threads_option"] = args.threads

    bench = Benchmark(model, x, target, device, sizes, _log)
    start = time.perf_counter()
    bench.run_bound()
    for section in args.sections:
        getattr(bench, f"run_{section}")()
    add_ratios(bench.rows)
    machine["loadavg_end"] = _loadavg()
    result = {
        "schema": SCHEMA,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["python -m benchmarks.compare_peers", *(argv if argv is not None else sys.argv[1:])]),
        "quick": args.quick,
        "machine": machine,
        "model": f"{args.model} (random init, seed 0)",
        "data": data_source,
        "targets_explained": "the model's predicted class",
        "sizes": asdict(sizes),
        "bound": bench.bound,
        "rows": bench.rows,
        "agreement": bench.agreement,
        "wall_seconds": time.perf_counter() - start,
    }
    result["targets"] = check_targets(bench.rows)
    result["agreement_ok"] = all(a["ok"] for a in bench.agreement.values() if a["kind"] == "deterministic")
    out = args.out
    if out is None:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        out = RESULTS_DIR / f"{'quick-' if args.quick else ''}{args.model}-{device.type}-{stamp}.json"
    write_json(result, out)
    return result, out


if __name__ == "__main__":
    sys.exit(main())
