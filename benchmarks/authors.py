"""The paper methods one image at a time, with the authors' batching: the peers of the suite's
RISE, RelEx, mask search, DANCE and sigma* rows.

Written for the benchmark from the papers' descriptions (/work/shared/papers/*.md) and the shape
of the authors' loops (no code copied): one image per call, and per model call what the authors'
code puts in it. They run on the same model, inputs and targets as the library and do the same
work per pass, so their time against the library's batched call measures the batching alone.

- RISE (Petsiuk et al., ``explanations.py``): masks drawn once per call and shared by the images;
  per image, the masked copies in model calls of ``gpu_batch`` = 100, softmax probabilities, the
  target's probability-weighted sum of the masks. The grids and shifts are drawn in the order the
  library draws them, so with the same seed the masks coincide up to the upsampling at the border.
- RelEx (``JBNU-VL/RelEx``, ``relex.py``): per image an SGD optimiser on the mask (momentum 0.99);
  per iteration one call of ``samples`` noisy copies times the mask and one of the copies times
  (1 - mask), the per-copy losses back-propagated with weights 1 / samples, the mask gradient
  divided by its L2 norm, a step, a clamp to [0, 1]. The model's parameters are frozen (a copy),
  so the loop is not charged for weight gradients the library never computes.
- Mask search (Thakur and Fischmeister's Keras code): per image one chain, one model call of one
  input per iteration, the grid resampled from the class probability, the upsampled mask summed.
- DANCE: the authors' TensorFlow code could not be read. The loop calls the library on one image
  at a time with ``batch_size`` = its 2P decoys, so all decoys of an image share a pass (the
  paper: "solve them as one batch").
- sigma* (``danvalle/adversarial_metric``, ``metric.py``): per image the cross-entropy gradient,
  then per variant and per budget tried one model call: one input for Rel and Irel, the
  permutations of a shuffled variant together. The search is the library's bisection (the
  authors' coarse-to-fine walk tries up to 40 budgets per variant), with the same permutations, so
  the budgets must equal the library's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

RISE_GPU_BATCH = 100  # masked copies per model call in the authors' RISE code


def _upsample(grids: Tensor, size: tuple[int, int], cell: tuple[int, int], shifts: Tensor) -> Tensor:
    """RISE-style masks (M, 1, H, W): each (s, s) grid bilinearly upsampled to (s + 1) * cell, then
    cropped at its shift (M, 2)."""
    s = grids.shape[-1]
    up = F.interpolate(grids[:, None], size=((s + 1) * cell[0], (s + 1) * cell[1]), mode="bilinear",
                       align_corners=False)
    h, w = size
    return torch.stack([up[m, :, dy:dy + h, dx:dx + w] for m, (dy, dx) in enumerate(shifts.tolist())])


def rise_loop(model: nn.Module, x: Tensor, target: Tensor, *, masks: int, grid_size: int, p: float = 0.5,
              seed: int = 0) -> Tensor:
    """RISE one image at a time, masks shared by the images; (N, 1, H, W)."""
    generator = torch.Generator().manual_seed(seed)
    h, w = x.shape[-2:]
    s = grid_size
    cell = (math.ceil(h / s), math.ceil(w / s))
    grids = (torch.rand((masks, s, s), generator=generator) < p).to(x.dtype)
    shifts = torch.stack([torch.randint(0, c, (masks,), generator=generator) for c in cell], 1)
    mask_set = _upsample(grids, (h, w), cell, shifts).to(x.device)  # (M, 1, H, W)
    maps = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            stack = mask_set * x[i]
            probs = torch.cat([model(stack[a:a + RISE_GPU_BATCH]).softmax(1)
                               for a in range(0, masks, RISE_GPU_BATCH)])
            maps.append((probs[:, target[i]].view(-1, 1, 1, 1) * mask_set).sum(0) / masks / p)
    return torch.stack(maps)


def frozen(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters do not require gradients."""
    import copy

    clone = copy.deepcopy(model)
    for parameter in clone.parameters():
        parameter.requires_grad_(False)
    return clone


def relex_loop(model: nn.Module, x: Tensor, target: Tensor, *, iterations: int, samples: int,
               noise_level: float = 0.1, lambda1: float = 1e-4, lambda2: float = 1.0, lr: float = 0.1,
               momentum: float = 0.99, seed: int = 0) -> Tensor:
    """RelEx one image at a time (``model`` should be :func:`frozen`); masks (N, C, H, W)."""
    generator = torch.Generator(device=x.device).manual_seed(seed)
    masks = []
    weights = torch.full((samples,), 1.0 / samples, device=x.device, dtype=x.dtype)
    for i in range(x.shape[0]):
        xi, c = x[i:i + 1], int(target[i])
        std = float(noise_level * (xi.max() - xi.min()))
        mask = (torch.rand(xi.shape, generator=generator, device=x.device, dtype=x.dtype) / 100).requires_grad_(True)
        optimiser = torch.optim.SGD([mask], lr=lr, momentum=momentum)
        for _ in range(iterations):
            noisy = xi + std * torch.randn((samples, *xi.shape[1:]), generator=generator, device=x.device,
                                           dtype=x.dtype)
            keep = model(noisy * mask).softmax(1)[:, c]
            drop = model(noisy * (1 - mask)).softmax(1)[:, c]
            losses = -torch.log(keep) + lambda1 * mask.abs().sum() - lambda2 * torch.log(1 - drop + 1e-7)
            losses.backward(weights)
            with torch.no_grad():
                mask.grad.mul_(1 / mask.grad.norm().clamp_min(torch.finfo(x.dtype).tiny))
            optimiser.step()
            optimiser.zero_grad()
            with torch.no_grad():
                mask.clamp_(0.0, 1.0)
        masks.append(mask.detach()[0])
    return torch.stack(masks)


def mask_search_loop(model: nn.Module, x: Tensor, target: Tensor, *, passes: int, grid_size: int,
                     initial_density: float = 0.3, rate: float = 0.02, seed: int = 0) -> Tensor:
    """Paper D's chain one image at a time, one model input per pass; maps (N, 1, H, W) normalised as
    the authors display them: relu(S - mean S) / max."""
    generator = torch.Generator().manual_seed(seed)
    h, w = x.shape[-2:]
    s = grid_size
    cell = (math.ceil(h / s), math.ceil(w / s))

    def upsample(grid: Tensor) -> Tensor:
        shift = torch.stack([torch.randint(0, c, (1,), generator=generator) for c in cell], 1)
        return _upsample(grid[None], (h, w), cell, shift)[0].to(x.device)  # (1, H, W)

    maps = []
    with torch.no_grad():
        for i in range(x.shape[0]):
            xi, c = x[i:i + 1], int(target[i])
            grid = (torch.rand((s, s), generator=generator) > 1 - initial_density).to(x.dtype)
            mask, total, previous = upsample(grid), torch.zeros((1, h, w), device=x.device, dtype=x.dtype), 0.0
            for _ in range(passes):
                prob = float(model(xi * mask).softmax(1)[0, c])
                stay, turn_on = torch.rand((s, s), generator=generator), torch.rand((s, s), generator=generator)
                on = torch.where(grid > 0, stay < prob, turn_on < 1 - prob).to(x.dtype)
                grid = on * torch.where(on > grid, torch.tensor(1 - rate * abs(prob - previous)), torch.tensor(1.0))
                mask = upsample(grid)
                total += mask
                previous = prob
            centred = (total - total.mean()).clamp(min=0)
            maps.append(centred / centred.max().clamp_min(torch.finfo(x.dtype).tiny))
    return torch.stack(maps)


def dance_loop(model: nn.Module, x: Tensor, target: Tensor, **options) -> Tensor:
    """The library's DANCE on one image per call, all 2P decoys of the image in one pass."""
    from reliable_saliency.explainers import dance
    from reliable_saliency.explainers.decoys import patch_positions

    positions = patch_positions(x.shape[-2], x.shape[-1], options.get("patch", 3), options["stride"]).shape[0]
    return torch.cat([dance(model, x[i:i + 1], target[i:i + 1], batch_size=2 * positions, **options)
                      for i in range(x.shape[0])])


def reliability_loop(model: nn.Module, x: Tensor, maps: Tensor, target: Tensor, *, seeds: list[int],
                     permutations: int, scan: int, iterations: int) -> Tensor:
    """Paper C's four budgets (N, 4) one image at a time: per variant and budget one model call (one
    input for Rel and Irel, the permutations together for the shuffled ones); the library's
    bisection and permutations, pixel-space directions as the library defines them."""
    from reliable_saliency.evaluation.reliability import shuffle_orders  # the same permutations

    space = model.input_space
    n, c = x.shape[:2]
    sigma_max = float(x[0].numel())
    out = torch.full((n, 4), float("nan"), dtype=torch.float64)
    for i in range(n):
        xi = x[i:i + 1].detach().clone().requires_grad_(True)
        logits = model(xi)
        label = int(target[i])
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, target[i:i + 1]), xi)
        if int(logits.argmax(1)) != label:
            continue  # the measure is defined on images the model predicts as `target`
        step = grad.sign() / torch.tensor(space.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        r = maps[i].reshape(-1)
        orders = shuffle_orders(seeds[i], 2 * permutations, r.numel(), x.device)
        variants = [r[None], r[orders[:permutations]], 1 - r[orders[permutations:]], 1 - r[None]]
        with torch.no_grad():
            for k, rows in enumerate(variants):
                mass = rows.sum(1) * c
                if not bool((mass > 0).all()):
                    continue  # an all-zero direction: undefined
                d = (rows / mass[:, None]).view(-1, 1, *x.shape[-2:]) * step  # (R, C, H, W)

                def kept(sigma: float) -> bool:
                    return bool((model(x[i:i + 1] + sigma * d).argmax(1) == label).all())

                low, high = None, None
                for j in range(1, scan + 1):
                    if not kept(sigma_max * j / scan):
                        low, high = sigma_max * (j - 1) / scan, sigma_max * j / scan
                        break
                if high is None:
                    out[i, k] = float("inf")
                    continue
                for _ in range(iterations):
                    middle = (low + high) / 2
                    low, high = (middle, high) if kept(middle) else (low, middle)
                out[i, k] = high
    return out
