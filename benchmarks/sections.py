"""The suite's sections: for each method, our configurations (the library's default batch size and
the sweep's best), the peers doing the same work, and the agreement check between them.

Each ``run_<section>(w)`` builds its configurations on the workload ``w``, times them in
interleaved rounds (:meth:`Workload.run`) and returns the section's record for the JSON.
"""

from __future__ import annotations

import copy
import statistics
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from reliable_saliency import evaluation, explainers
from reliable_saliency.core.batching import image_seeds, resolve_batch_size

from . import authors
from .harness import (Config, Timer, add_ratios, budget_agreement, curve_agreement, float64_copy,
                      map_agreement, monte_carlo, passes_by_kind, x_bound)
from .settings import PAPER_PASSES, SECTIONS

OURS = "reliable_saliency"


@dataclass
class Workload:
    """One image size: its model, inputs, targets (the model's predictions), settings and bound."""

    size: int
    model: nn.Module
    model_name: str
    x: Tensor
    target: Tensor
    data: str
    settings: dict
    timer: Timer
    quick: bool
    log: Callable[[str], None] = print
    bound: dict = field(default_factory=dict)
    train_model: nn.Module | None = None

    @property
    def device(self) -> torch.device:
        return self.x.device

    def inputs(self, n: int) -> tuple[Tensor, Tensor]:
        return self.x[:n], self.target[:n]

    def best(self, kind: str) -> int:
        return self.bound[kind]["best_batch"]

    def per_pass(self) -> dict[str, float]:
        return {kind: entry["best_seconds_per_pass"] for kind, entry in self.bound.items()}

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(seed)

    def exact_images(self) -> int:
        """Images of the float64 reruns of the deterministic agreement checks."""
        return 1 if self.quick or self.size != 32 else 4

    def float64(self, n: int, model: nn.Module | None = None):
        k = min(n, self.exact_images())
        return float64_copy(model or self.model), self.x[:k].double(), self.target[:k]

    # ------------------------------------------------------------------ configurations

    def ours(self, make: Callable[[int | None], Callable[[], object]], kind: str, n: int,
             rows: int) -> list[Config]:
        """Our default (``batch_size=None``) and, where it makes other passes, the sweep's best batch
        size. ``rows``: the most model inputs the call could put in one pass (a batch size above it
        changes nothing)."""
        default = resolve_batch_size(None, self.x[:n])
        best = self.best(kind)
        configs = [Config(OURS, "ours", f"batch_size=None (default: {default})", make(None), True,
                          {"batch_size": None, "resolved": default}, key="ours")]
        if min(best, rows) != min(default, rows):
            configs.append(Config(OURS, "ours", f"batch_size={best} (the sweep's best)", make(best), False,
                                  {"batch_size": best}, key="ours_best"))
        return configs

    # ------------------------------------------------------------------ timing and rows

    def run(self, name: str, n: int, configs: list[Config], agree: Callable[[dict], dict] | None,
            sequential: bool = False, notes: list[str] | None = None) -> dict:
        self.log(f"[{self.size} px] {name}: {n} images, {len(configs)} configurations")
        measured = self.timer.measure(configs, self.model, self.log)
        per_pass = self.per_pass()
        rows, outputs = [], {}
        for m in measured:
            c = m.config
            outputs[c.key or c.label] = m.output
            seconds = statistics.median(m.times) / n
            passes = passes_by_kind(m, n)
            row = {
                "section": name, "impl": c.impl, "role": c.role, "label": c.label, "default": c.default,
                "best": False, "settings": c.settings, "seconds_per_image": seconds,
                "times_per_image": [t / n for t in m.times], "passes_per_image": sum(passes.values()),
                "passes_by_kind": passes, "model_calls": m.calls, "widest_call": m.widest,
                "bound_seconds_per_image": None, "x_bound": x_bound(seconds, passes, per_pass),
                "peak_bytes": m.peak_bytes,
            }
            row["bound_seconds_per_image"] = seconds / row["x_bound"] if row["x_bound"] else None
            if c.note:
                row["note"] = c.note
            if sequential:  # the bound at the batch the method can fill: its widest call
                at = {k: self.bound[k]["seconds_per_pass_by_batch"].get(str(m.widest)) for k in passes}
                if all(v is not None for v in at.values()):
                    row["x_bound_at_own_batch"] = {"batch": m.widest, "x_bound": x_bound(seconds, passes, at)}
            rows.append(row)
            self.log(f"    {c.impl} [{c.label}]: {seconds:.4g} s/image, {row['passes_per_image']:.4g} passes/image, "
                     f"x bound {row['x_bound'] or float('nan'):.3g}")
        add_ratios(rows)
        agreement = None
        if agree is not None:
            try:
                with warnings.catch_warnings():  # the peers' advisories, as in the timed runs
                    warnings.simplefilter("ignore")
                    agreement = agree(outputs)
            except Exception as error:  # a check that cannot run is a failed check, reported
                agreement = {"kind": "deterministic", "ok": False, "problem": f"{type(error).__name__}: {error}"}
        title, paper = SECTIONS[name]
        settings = {k: v for k, v in self.settings[name].items()}
        paper_passes = PAPER_PASSES.get(name, {}).get(self.size)
        return {"name": name, "title": title, "paper_setting": paper, "paper_passes": paper_passes,
                "settings": settings, "images": n,
                "sequential": sequential, "rows": rows, "agreement": agreement, "notes": notes or []}


def _chunks(fn: Callable[[Tensor, Tensor], Tensor], x: Tensor, t: Tensor, b: int) -> Callable[[], Tensor]:
    return lambda: torch.cat([fn(x[a:a + b], t[a:a + b]) for a in range(0, x.shape[0], b)])


def _peer_chunkings(n: int, best: int) -> list[tuple[int, bool]]:
    """All images in one call (a peer's default) and chunks of the sweep's best batch if smaller."""
    return [(n, True)] + ([(best, False)] if best < n else [])


# ----------------------------------------------------------------------------- gradient family


def run_gradient(w: Workload) -> dict:
    from captum.attr import Saliency

    n = w.settings["gradient"]["images"]
    x, t = w.inputs(n)
    configs = w.ours(lambda bs: lambda: explainers.gradient(w.model, x, t, batch_size=bs), "fwd_bwd", n, n)
    saliency = Saliency(w.model)
    for b, default in _peer_chunkings(n, w.best("fwd_bwd")):
        label = "all images in one call (default)" if default else f"chunks of {b} images"
        configs.append(Config("captum Saliency(abs=False)", "peer", label,
                              _chunks(lambda a, y: saliency.attribute(a.detach(), target=y, abs=False), x, t, b),
                              default, {"chunk": b}, key="captum" if default else "captum_best"))

    def agree(out):
        m64, x64, t64 = w.float64(n)
        exact = (explainers.gradient(m64, x64, t64), Saliency(m64).attribute(x64.clone(), target=t64, abs=False))
        return map_agreement(out["ours"], out["captum"], *exact, "captum Saliency")

    return w.run("gradient", n, configs, agree)


def run_smoothgrad(w: Workload) -> dict:
    from captum.attr import NoiseTunnel, Saliency

    st = w.settings["smoothgrad"]
    n, s, level = st["images"], st["samples"], st["noise_level"]
    x, t = w.inputs(n)

    def ours(bs, seed=0):
        return explainers.smoothgrad(w.model, x, t, samples=s, noise_level=level, generator=w.generator(seed),
                                     batch_size=bs)

    configs = w.ours(lambda bs: lambda: ours(bs), "fwd_bwd", n, n * s)
    # captum's stdevs is one absolute number for the batch: the mean of our per-image sigma
    flat = x.flatten(1)
    stdev = float((level * (flat.amax(1) - flat.amin(1))).mean())
    tunnel = NoiseTunnel(Saliency(w.model))

    def captum(k):
        return lambda: tunnel.attribute(x.detach(), nt_type="smoothgrad", nt_samples=s, nt_samples_batch_size=k,
                                        stdevs=stdev, target=t, abs=False)

    impl = "captum NoiseTunnel(Saliency)"
    configs.append(Config(impl, "peer", "nt_samples_batch_size=None (default: all samples at once)", captum(None),
                          True, {"nt_samples_batch_size": None, "stdevs": stdev}, key="captum"))
    k = max(1, w.best("fwd_bwd") // n)
    if k < s:
        configs.append(Config(impl, "peer", f"nt_samples_batch_size={k} ({k * n} inputs per pass)", captum(k), False,
                              {"nt_samples_batch_size": k}, key="captum_best"))
    return w.run("smoothgrad", n, configs,
                 lambda out: monte_carlo(out["ours"], out["captum"], ours(None, seed=1), "captum NoiseTunnel"))


def run_integrated_gradients(w: Workload) -> dict:
    from captum.attr import IntegratedGradients

    st = w.settings["integrated_gradients"]
    n, s = st["images"], st["steps"]
    x, t = w.inputs(n)

    def ours(model, inputs, target, bs=None):
        return explainers.integrated_gradients(model, inputs, target, steps=s, method="midpoint", baseline="zero",
                                               batch_size=bs)

    configs = w.ours(lambda bs: lambda: ours(w.model, x, t, bs), "fwd_bwd", n, n * s)
    ig = IntegratedGradients(w.model)

    def captum(ibs):
        return lambda: ig.attribute(x.detach(), target=t, n_steps=s, method="riemann_middle", internal_batch_size=ibs)

    impl = "captum IntegratedGradients"
    configs.append(Config(impl, "peer", "internal_batch_size=None (default: all steps at once)", captum(None), True,
                          {"internal_batch_size": None}, key="captum"))
    k = max(2, w.best("fwd_bwd") // n)  # captum cuts the steps into chunks of internal_batch_size // N (>= 2)
    if k < s:
        configs.append(Config(impl, "peer", f"internal_batch_size={k * n} ({k} steps per pass)", captum(k * n),
                              False, {"internal_batch_size": k * n}, key="captum_best"))

    def agree(out):
        m64, x64, t64 = w.float64(n)
        exact = (ours(m64, x64, t64), IntegratedGradients(m64).attribute(x64, target=t64, n_steps=s,
                                                                          method="riemann_middle"))
        return map_agreement(out["ours"], out["captum"], *exact, "captum IntegratedGradients")

    return w.run("integrated_gradients", n, configs, agree,
                 notes=["midpoint rule (captum's riemann_middle), zero baseline"])


def run_gradcam(w: Workload) -> dict:
    from captum.attr import LayerAttribution, LayerGradCam

    from reliable_saliency.core.hooks import last_spatial_layer

    n = w.settings["gradcam"]["images"]
    x, t = w.inputs(n)
    configs = w.ours(lambda bs: lambda: explainers.gradcam(w.model, x, t, batch_size=bs), "fwd_bwd", n, n)
    layer, call = last_spatial_layer(w.model, x)
    notes = [f"layer {layer} (the library's default: the last spatial layer); the backward pass stops at that "
             "layer, so the bound counts every model input as a forward pass (a lower bound)"]

    def captum_cam(model, inputs, target):
        cam = LayerGradCam(model, model.get_submodule(layer)).attribute(inputs, target=target, relu_attributions=True)
        return LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), interpolate_mode="bilinear")

    if call is None:
        for b, default in _peer_chunkings(n, w.best("fwd_bwd")):
            label = "all images in one call (default)" if default else f"chunks of {b} images"
            configs.append(Config("captum LayerGradCam", "peer", label,
                                  _chunks(lambda a, y: captum_cam(w.model, a.detach(), y), x, t, b), default,
                                  {"chunk": b}, key="captum" if default else "captum_best"))
    else:
        notes.append("captum not run: the layer runs several times per forward pass")
    for c in configs:
        c.kind = "fwd"

    def agree(out):
        if "captum" not in out:
            return None
        m64, x64, t64 = w.float64(n)
        exact = (explainers.gradcam(m64, x64, t64, layer=layer), captum_cam(m64, x64, t64))
        return map_agreement(out["ours"], out["captum"], *exact, "captum LayerGradCam (bilinear upsampling)")

    return w.run("gradcam", n, configs, agree, notes=notes)


def _zennit(model: nn.Module):
    """zennit's epsilon rule on every linear module (and its ResNet canonizer's sums): the same
    rule as lrp_epsilon. A copy without in-place operations, as zennit needs."""
    import torchvision
    from zennit.attribution import Gradient
    from zennit.composites import LayerMapComposite
    from zennit.layer import Sum
    from zennit.rules import Epsilon
    from zennit.torchvision import ResNetBasicBlockCanonizer

    oracle = copy.deepcopy(model)
    for module in oracle.modules():
        if hasattr(module, "inplace"):
            module.inplace = False
    linear = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
    rules = [(kind, Epsilon(1e-6)) for kind in linear] + [(Sum, Epsilon(1e-12))]
    canonizers = [ResNetBasicBlockCanonizer()] if isinstance(model, torchvision.models.ResNet) else []

    def explain(inputs: Tensor, target: Tensor, chunk: int) -> Tensor:
        with torch.no_grad():
            classes = oracle(inputs[:1]).shape[1]
        parts = []
        with Gradient(oracle, LayerMapComposite(rules, canonizers=canonizers)) as attributor:
            for a in range(0, inputs.shape[0], chunk):
                onehot = torch.eye(classes, dtype=inputs.dtype, device=inputs.device)[target[a:a + chunk]]
                _, relevance = attributor(inputs[a:a + chunk].detach().clone().requires_grad_(True),
                                          lambda out, onehot=onehot: out * onehot)
                parts.append(relevance)
        return torch.cat(parts)

    return oracle, explain


def run_lrp_epsilon(w: Workload) -> dict:
    n = w.settings["lrp_epsilon"]["images"]
    x, t = w.inputs(n)
    configs = w.ours(lambda bs: lambda: explainers.lrp_epsilon(w.model, x, t, batch_size=bs), "fwd_bwd", n, n)
    oracle, explain = _zennit(w.model)
    for b, default in _peer_chunkings(n, w.best("fwd_bwd")):
        label = "all images in one call (default)" if default else f"chunks of {b} images"
        configs.append(Config("zennit EpsilonComposite", "peer", label, lambda b=b: explain(x, t, b), default,
                              {"chunk": b}, model=oracle, key="zennit" if default else "zennit_best"))

    def agree(out):
        m64, x64, t64 = w.float64(n)
        _, explain64 = _zennit(m64)
        exact = (explainers.lrp_epsilon(m64, x64, t64), explain64(x64, t64, x64.shape[0]))
        return map_agreement(out["ours"], out["zennit"], *exact, "zennit epsilon rule (LayerMapComposite)")

    return w.run("lrp_epsilon", n, configs, agree, notes=["epsilon 1e-6 (both defaults)"])


# ----------------------------------------------------------------------------- black-box and paper methods


def run_rise(w: Workload) -> dict:
    st = w.settings["rise"]
    n, masks, grid = st["images"], st["masks"], st["grid_size"]
    x, t = w.inputs(n)

    def ours(bs, seed=0):
        return explainers.rise(w.model, x, t, masks=masks, grid_size=grid,
                               generator=torch.Generator().manual_seed(seed), batch_size=bs)

    configs = w.ours(lambda bs: lambda: ours(bs), "fwd", n, n * masks)
    per_pass = min(masks, authors.RISE_GPU_BATCH)
    configs.append(Config("authors' loop", "peer", f"one image per call, {per_pass} masks per pass (gpu_batch 100)",
                          lambda: authors.rise_loop(w.model, x, t, masks=masks, grid_size=grid), True,
                          {"gpu_batch": authors.RISE_GPU_BATCH}, key="loop"))
    return w.run("rise", n, configs, lambda out: monte_carlo(out["ours"], out["loop"], ours(None, seed=1),
                                                             "the authors' loop (other masks)"))


def run_relex(w: Workload) -> dict:
    st = w.settings["relex"]
    n, iterations, samples = st["images"], st["iterations"], st["samples"]
    x, t = w.inputs(n)

    def ours(bs, seed=0):
        return explainers.relex(w.model, x, t, iterations=iterations, samples=samples, generator=w.generator(seed),
                                batch_size=bs)

    configs = w.ours(lambda bs: lambda: ours(bs), "fwd_bwd", n, n * 2 * samples)
    frozen = authors.frozen(w.model)
    configs.append(Config("authors' loop", "peer", f"one image per call, 2 passes of {samples} copies per iteration",
                          lambda: authors.relex_loop(frozen, x, t, iterations=iterations, samples=samples), True,
                          {"batch": samples}, model=frozen, key="loop"))
    return w.run("relex", n, configs, lambda out: monte_carlo(out["ours"], out["loop"], ours(None, seed=1),
                                                              "the authors' loop (other noise)"))


def run_dance(w: Workload) -> dict:
    from reliable_saliency.explainers.decoys import patch_positions

    st = w.settings["dance"]
    n = st["images"]
    options = {"stride": st["stride"], "steps": st["steps"], "repair": st["repair"]}
    x, t = w.inputs(n)
    positions = patch_positions(w.size, w.size, 3, st["stride"]).shape[0]
    configs = w.ours(lambda bs: lambda: explainers.dance(w.model, x, t, batch_size=bs, **options), "fwd_bwd", n,
                     n * 2 * positions)
    configs.append(Config("one image per call", "peer", f"the library per image, its {2 * positions} decoys per pass "
                          "(the authors' code could not be read)", lambda: authors.dance_loop(w.model, x, t, **options),
                          True, {"batch_size": 2 * positions}, key="loop"))
    notes = [f"gradient base, 3x3 patch, {positions} positions ({2 * positions} decoys per image); solver passes "
             "stop at the decoy layer but are counted as whole fwd+bwd passes, so x bound is slightly low"]
    return w.run("dance", n, configs, lambda out: map_agreement(out["ours"], out["loop"], None, None,
                                                                "the library on one image per call"), notes=notes)


def run_mask_search(w: Workload) -> dict:
    st = w.settings["mask_search"]
    n, passes, grid = st["images"], st["passes"], st["grid_size"]
    x, t = w.inputs(n)

    def ours(bs, seed=0):
        return explainers.mask_search(w.model, x, t, passes=passes, grid_size=grid,
                                      generator=torch.Generator().manual_seed(seed), batch_size=bs)

    configs = w.ours(lambda bs: lambda: ours(bs), "fwd", n, n)  # one chain per image: n inputs per pass
    configs.append(Config("authors' loop", "peer", "one image per call, one input per pass",
                          lambda: authors.mask_search_loop(w.model, x, t, passes=passes, grid_size=grid), True, {},
                          key="loop"))
    notes = [f"the chain is sequential: N images give at most N = {n} inputs per pass, whatever the batch size; "
             "'x bound at own batch' is the bound at the widest pass the row made"]
    return w.run("mask_search", n, configs,
                 lambda out: monte_carlo(out["ours"], out["loop"], ours(None, seed=1),
                                         "the authors' loop (other chains)"),
                 sequential=True, notes=notes)


def run_reliability(w: Workload) -> dict:
    from reliable_saliency.evaluation.reliability import adversarial_reliability, reliability_maps

    st = w.settings["reliability"]
    n, options = st["images"], {k: st[k] for k in ("permutations", "scan", "iterations")}
    x, t = w.inputs(n)
    maps = reliability_maps(explainers.get_explainer("gradient"), w.model, x, t)  # not timed
    seeds = image_seeds(torch.Generator().manual_seed(0), n)
    tolerance = float(x[0].numel()) / options["scan"] / 2 ** options["iterations"]

    def ours(bs):
        return lambda: adversarial_reliability(w.model, x, maps, t, seeds=seeds, batch_size=bs, **options).budgets

    configs = w.ours(ours, "fwd", n, n * (2 + 2 * options["permutations"]))
    configs.append(Config("authors' loop", "peer", "one image per call; per variant and budget one pass "
                          f"(1 input, or the {options['permutations']} permutations)",
                          lambda: authors.reliability_loop(w.model, x, maps, t, seeds=seeds, **options), True, {},
                          key="loop"))
    notes = ["gradient maps (the authors' post-processing), bisection search: "
             f"scan {options['scan']}, {options['iterations']} bisection steps, both rows"]
    return w.run("reliability", n, configs,
                 lambda out: budget_agreement(out["ours"], out["loop"], tolerance, "the authors' loop (same search)"),
                 notes=notes)


def run_l2_cosd(w: Workload) -> dict:
    from reliable_saliency.training.regularisers import regularised_loss

    from .regulariser_cost import METHODS  # paper E's LeNet setting (the cost does not depend on the lambdas)

    n = w.settings["l2_cosd"]["batch"]
    x, y = w.inputs(n)

    def make(method: str):
        model = copy.deepcopy(w.train_model)
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=4e-5)
        generator = w.generator(2)

        def step():
            loss = regularised_loss(model, x, y, METHODS[method], generator=generator).loss
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimiser.step()

        return step, model

    step, model = make("l2_cosd")
    ce_step, ce_model = make("ce")
    configs = [
        Config(OURS, "ours", f"regularised_loss(l2_cosd) + backward + clip + Adam, batch {n}", step, True,
               {"batch": n, "regulariser": "l2_cosd"}, model=model, kind="double_backprop", key="ours"),
        Config("plain cross-entropy step", "reference", f"the same step with plain cross-entropy, batch {n}", ce_step,
               False, {"batch": n, "regulariser": None}, model=ce_model, kind="train", key="ce"),
    ]
    section = w.run("l2_cosd", n, configs, None, notes=[
        "per training example; Softplus(beta=3) model in train mode; the bound of the l2 + cosd row is a bare "
        "double-backprop step, of the cross-entropy row a bare cross-entropy step (forward, backward)"])
    ours_row, ce_row = section["rows"]
    section["l2_cosd_over_ce_step"] = ours_row["seconds_per_image"] / ce_row["seconds_per_image"]
    per_pass = w.per_pass()
    section["bound_l2_over_ce"] = 2 * per_pass["double_backprop"] / per_pass["train"]
    return section


# ----------------------------------------------------------------------------- metrics


def run_max_sensitivity(w: Workload) -> dict:
    import quantus
    from captum.attr import Saliency
    from captum.metrics import sensitivity_max

    st = w.settings["max_sensitivity"]
    n, s, r = st["images"], st["samples"], st["radius"]
    x, t = w.inputs(n)

    def ours(bs, seed=0):
        return evaluation.max_sensitivity(explainers.gradient, w.model, x, t, radius=r, samples=s,
                                          generator=w.generator(seed), batch_size=bs)

    configs = w.ours(lambda bs: lambda: ours(bs), "fwd_bwd", n, n * (s + 1))
    saliency = Saliency(w.model)

    def captum_explain(inputs, target):  # captum calls it under no_grad
        with torch.enable_grad():
            return saliency.attribute(inputs, target=target, abs=False)

    def captum(mepb):
        return lambda: sensitivity_max(captum_explain, x.detach(), perturb_radius=r, n_perturb_samples=s,
                                       max_examples_per_batch=mepb, target=t)

    impl = "captum sensitivity_max(Saliency)"
    configs.append(Config(impl, "peer", "max_examples_per_batch=None (default)", captum(None), True,
                          {"max_examples_per_batch": None}, key="captum"))
    k = max(1, w.best("fwd_bwd") // n)
    if k < s:
        configs.append(Config(impl, "peer", f"max_examples_per_batch={k * n} ({k} samples per pass)", captum(k * n),
                              False, {"max_examples_per_batch": k * n}, key="captum_best"))
    x_np, y_np = x.detach().cpu().numpy(), t.detach().cpu().numpy()

    def quantus_run(batch):
        def run():
            metric = quantus.MaxSensitivity(nr_samples=s, lower_bound=r, abs=False, normalise=False,
                                            disable_warnings=True, display_progressbar=False)
            return np.asarray(metric(model=w.model, x_batch=x_np, y_batch=y_np, a_batch=None,
                                     explain_func=quantus.explain,
                                     explain_func_kwargs={"method": "Gradient", "reduce_axes": ()},
                                     device=w.device.type, batch_size=batch))
        return run

    impl = "quantus MaxSensitivity(Gradient)"
    default = min(64, n)
    for b in sorted({default, min(w.best("fwd_bwd"), n)}):
        configs.append(Config(impl, "peer", f"batch_size={b}" + (" (default)" if b == default else ""),
                              quantus_run(b), b == default, {"batch_size": b},
                              key="quantus" if b == default else "quantus_best"))

    def agree(out):  # Monte-Carlo: the mean of each implementation, and ours with another seed
        return {"kind": "monte-carlo (report only)", "against": "captum and Quantus (other noise)",
                "mean_ours": float(out["ours"].nanmean()), "mean_ours_other_seed": float(ours(None, seed=1).nanmean()),
                "mean_captum": float(out["captum"].float().nanmean()),
                "mean_quantus": float(np.nanmean(np.asarray(out["quantus"])))}

    return w.run("max_sensitivity", n, configs, agree,
                 notes=[f"{s} samples in the L-inf ball of radius {r} (normalised units), the gradient explainer"])


def run_deletion(w: Workload) -> dict:
    import quantus

    from reliable_saliency.maps import postprocess

    st = w.settings["deletion"]
    n, k = st["images"], st["steps"]
    x, t = w.inputs(n)
    c, h, width = x.shape[1:]
    if (h * width) % k:
        raise ValueError(f"deletion steps {k} must divide the {h * width} pixels (Quantus flips equal steps)")
    maps = postprocess.channel_sum(postprocess.absolute(explainers.gradient(w.model, x, t))).detach()
    maps_np = maps.unsqueeze(1).cpu().numpy()  # Quantus broadcasts (N, 1, H, W) over channels

    def ours(bs):
        return lambda: evaluation.deletion_auc(w.model, x, maps, t, substrate="zero", steps=k, batch_size=bs,
                                               return_curve=True)[1]

    configs = w.ours(ours, "fwd", n, n * (k + 1))
    # Quantus flips `features_in_step` entries of the flattened (C, H, W) input per step and asserts
    # that it divides H * W: C * k steps of H * W / k entries; every C-th point is one of ours.
    per_step = h * width // k
    x_np, y_np = x.detach().cpu().numpy(), t.detach().cpu().numpy()

    def quantus_run(batch):
        def run():
            metric = quantus.PixelFlipping(features_in_step=per_step, perturb_baseline=0.0, abs=False,
                                           normalise=False, disable_warnings=True, display_progressbar=False)
            return np.asarray(metric(model=w.model, x_batch=x_np, y_batch=y_np, a_batch=maps_np, softmax=True,
                                     device=w.device.type, batch_size=batch))
        return run

    default = min(64, n)
    for b in sorted({default, min(w.best("fwd"), n)}):
        label = f"batch_size={b}" + (" (default)" if b == default else "")
        configs.append(Config("quantus PixelFlipping", "peer", label, quantus_run(b), b == default,
                              {"batch_size": b, "features_in_step": per_step},
                              key="quantus" if b == default else "quantus_best"))

    def agree(out):
        curve = out["ours"]
        reference = torch.as_tensor(out["quantus"], dtype=curve.dtype)
        return curve_agreement(curve[:, 1:], reference[:, c - 1::c],
                               f"quantus PixelFlipping (points {c}, {2 * c}, ...)")

    return w.run("deletion", n, configs, agree, notes=[
        f"{k} steps of {per_step} pixels, zero substrate, maps sum_c |gradient|; Quantus flips one channel entry "
        f"at a time: {c * k} steps"])


RUNNERS = {name: globals()[f"run_{name}"] for name in SECTIONS}
