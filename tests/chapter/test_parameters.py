"""Chapter parameters are read from the parameters cell and checked before anything executes."""

import re
from pathlib import Path

import pytest

from reliable_saliency.chapter.parameters import ParameterError, check_overrides, parse_value, read_parameters

NOTEBOOKS = sorted((Path(__file__).resolve().parents[2] / "notebooks").glob("[0-9][0-9]_*.py"))

CELL = '''# %% [markdown]
# # 9. A chapter

# %% tags=["parameters"]
profile: str = "smoke"  # smoke | book | paper
device: str = "auto"  # "auto", "cpu", "cuda" or "cuda:N"
seed: int = 0
images: int | None = None  # [1, 10000] test images (None: from the profile)
pgd_eps: float = 8 / 255  # [0, 1] L-inf budget in pixel units
models: list[str] = ["lenet_natural"]  # zoo recipes
unroll: list[tuple[int, int]] | None = None  # (iterations, copies) pairs

# %%
print("body")
'''


@pytest.fixture
def params(tmp_path):
    path = tmp_path / "09_chapter.py"
    path.write_text(CELL)
    return read_parameters(path)


@pytest.mark.parametrize("source", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_chapter_declares_typed_parameters(source):
    params = read_parameters(source)
    assert {"profile", "device", "seed"} <= set(params)
    assert params["profile"].choices == ("smoke", "book", "paper")


def test_reads_names_types_defaults_help_and_choices(params):
    assert list(params) == ["profile", "device", "seed", "images", "pgd_eps", "models", "unroll"]
    assert params["images"].annotation == "int | None" and params["images"].default == "None"
    assert params["pgd_eps"].default == "8 / 255" and "pixel units" in params["pgd_eps"].help
    assert params["device"].choices == ()  # free text: cuda:N is allowed


def test_values_parse_as_literals_or_arithmetic():
    assert parse_value("500") == 500 and parse_value("8/255") == pytest.approx(8 / 255)
    assert parse_value("[(1, 2), (3, 4)]") == [(1, 2), (3, 4)] and parse_value("None") is None
    assert parse_value("cuda") == "cuda"


def test_good_overrides_pass(params):
    values = check_overrides(params, {"images": "500", "pgd_eps": "4/255", "models": "['lenet_natural', 'lenet_fgsm']",
                                      "unroll": "[(2, 2)]", "device": "cpu"})
    assert values == {"images": 500, "pgd_eps": pytest.approx(4 / 255), "models": ["lenet_natural", "lenet_fgsm"],
                      "unroll": [(2, 2)], "device": "cpu"}


@pytest.mark.parametrize("name, text, message", [
    ("imagse", "5", "has no parameter 'imagse'; its parameters are: profile, device, seed, images"),
    ("seed", "abc", "parameter seed expects int"),
    ("images", "2.5", "parameter images expects int | None"),
    ("models", "lenet_natural", "parameter models expects list[str]"),  # not a list of characters
    ("pgd_eps", "-8/255", "must not be negative"),
    ("unroll", "[(2, -1)]", "must not be negative"),
    ("profile", "fast", "must be one of smoke, book, paper"),
])
def test_bad_overrides_are_refused_with_what_is_valid(params, name, text, message):
    with pytest.raises(ParameterError, match=re.escape(message)):
        check_overrides(params, {name: text})


def test_a_cell_without_types_is_refused(tmp_path):
    path = tmp_path / "09_untyped.py"
    path.write_text(CELL.replace("seed: int = 0", "seed = 0"))
    with pytest.raises(ParameterError, match="name: type = default"):
        read_parameters(path)


def test_a_parameter_without_description_gets_a_clean_message(params):
    with pytest.raises(ParameterError) as error:
        check_overrides(params, {"seed": "-1"})  # `seed: int = 0` has no description
    assert str(error.value) == "parameter seed must not be negative (got '-1')"


@pytest.mark.parametrize("name, text, message", [
    ("pgd_eps", "8", r"must lie in \[0, 1\].*did you mean 8/255"),
    ("images", "0", r"must lie in \[1, 10000\]"),
    ("images", "100000000", r"must lie in \[1, 10000\]"),
    ("seed", "99999999999999999999999", "does not fit in 64 bits"),
    ("models", "['lenet_natral']", "no zoo recipe named 'lenet_natral'"),
    ("device", "nonsense", "device must be auto, cpu, cuda or cuda:N"),
])
def test_ranges_names_and_devices_are_checked_before_anything_runs(params, name, text, message):
    """#24 finding 9: these failed 10-120 s into the chapter, or with raw tracebacks."""
    with pytest.raises(ParameterError, match=message):
        check_overrides(params, {name: text})


def test_a_cuda_device_must_exist(params, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ParameterError, match="no CUDA device"):
        check_overrides(params, {"device": "cuda:1"})


def test_a_malformed_range_is_an_error_in_the_chapter(tmp_path):
    path = tmp_path / "09_bad.py"
    path.write_text(CELL.replace("# [1, 10000] test images", "# [1, 2 lots] test images"))
    with pytest.raises(ParameterError, match="range"):
        read_parameters(path)


@pytest.mark.parametrize("chapter, name, text, message", [
    ("00_data_and_models", "eval_images", "0", r"must lie in \[1, 10000\]"),
    ("00_data_and_models", "pgd_eps", "8", "did you mean 8/255"),
    ("00_data_and_models", "models", "['lenet_x']", "no zoo recipe named 'lenet_x'"),
    ("02_relex", "main_images", "1000000", r"must lie in \[1, 10000\]"),
    ("03_dance", "stride", "0", r"must lie in \[1, \.\.\.\]"),
    ("06_gradient_alignment", "device", "nonsense", "device must be"),
])
def test_the_book_chapters_state_their_ranges(chapter, name, text, message):
    """#24 finding 9 on the real chapters: each of these failed 10-120 s into the run before."""
    source = next(p for p in NOTEBOOKS if p.stem == chapter)
    with pytest.raises(ParameterError, match=message):
        check_overrides(read_parameters(source), {name: text}, chapter)
