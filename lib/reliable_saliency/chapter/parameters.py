"""A chapter's parameters, read from its ``parameters`` cell, and the check of a reader's overrides
before anything executes.

Each line of the cell is ``name: type = default  # help``. The type is one of ``int``, ``float``,
``str``, ``bool``, ``list[T]``, ``tuple[T, ...]``, ``tuple[T1, T2]`` or a union with ``None``; a
``str`` whose help starts with ``a | b | c`` accepts only those words. Every number of the book is a
count, size, budget or seed, so **negative numbers are refused**, and no integer may overflow
torch's 64 bits. A help text may start with a **range** ``[low, high]`` (``high`` may be ``...``)
that every number of the value must lie in: ``[1, ...]`` for a count that must not be zero,
``[0, 1]`` for a pixel budget (a value between 1 and 255 gets the hint "did you mean v/255?").
A help text that mentions **zoo recipes** accepts only the zoo's recipe names, and ``device``
accepts ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` where such a device exists. Values on the command
line are Python literals (``500``, ``"cuda"``, ``[1, 2]``, ``None``) or arithmetic on numbers
(``8/255``).
"""

from __future__ import annotations

import ast
import json
import operator
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Parameter", "ParameterError", "read_parameters", "parse_value", "check_overrides"]


class ParameterError(ValueError):
    """An override that the chapter would not accept: unknown name, wrong type or out of range."""


@dataclass(frozen=True)
class Parameter:
    name: str
    annotation: str  # the type as written, e.g. "int | None"
    default: str  # the default as written, e.g. "8 / 255"
    help: str
    choices: tuple[str, ...] = ()
    low: float | None = None  # the range the help states, if any
    high: float | None = None


def _cell_source(path: Path) -> str:
    path = Path(path)
    if path.suffix == ".ipynb":
        cells = json.loads(path.read_text())["cells"]
        for cell in cells:
            if "parameters" in cell.get("metadata", {}).get("tags", []):
                source = cell["source"]
                return "".join(source) if isinstance(source, list) else source
    else:
        lines, inside = [], False
        for line in path.read_text().splitlines():
            if line.startswith("# %%"):
                if inside:
                    break
                inside = 'tags=["parameters"]' in line
            elif inside:
                lines.append(line)
        if inside or lines:
            return "\n".join(lines)
    raise ParameterError(f"{path.name} has no cell tagged 'parameters'")


def read_parameters(path: str | Path) -> dict[str, Parameter]:
    """The parameters of the chapter at ``path`` (a py:percent source or a notebook), in order."""
    source = _cell_source(Path(path))
    lines = source.splitlines()
    found = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name) or node.value is None:
            raise ParameterError(
                f"{Path(path).name}: every line of the parameters cell must read 'name: type = default  # help' "
                f"(line {node.lineno}: {lines[node.lineno - 1].strip()!r})"
            )
        line = lines[node.lineno - 1]
        help_text = line.split("#", 1)[1].strip() if "#" in line else ""
        first = help_text.split("(")[0]
        words = [w.strip() for w in first.split("|")]
        choices = tuple(words) if len(words) > 1 and all(w.isidentifier() for w in words) else ()
        low, high = _stated_range(help_text, Path(path).name, node.target.id)
        name = node.target.id
        found[name] = Parameter(name, ast.unparse(node.annotation), ast.unparse(node.value), help_text, choices,
                                low, high)
    return found


_RANGE = re.compile(r"^\[\s*([0-9][^,\]]*?)\s*,\s*(\.\.\.|[0-9][^\]]*?)\s*\]")  # [1, ...], [0, 1], [1, 10000]


def _stated_range(help_text: str, source: str, name: str) -> tuple[float | None, float | None]:
    found = _RANGE.match(help_text)
    if not found:
        return None, None
    try:
        low, high = (None if t == "..." else float(_number_expression(ast.parse(t, mode="eval").body))
                     for t in found.groups())
    except (ValueError, SyntaxError) as error:
        raise ParameterError(f"{source}: parameter {name}'s range {found.group(0)!r} is not [number, number or ...]") \
            from error
    return low, high


def _numbers(value) -> list:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _numbers(v)]
    return []


def _check_range(name: str, spec: Parameter, value, text: str) -> None:
    for number in _numbers(value):
        if isinstance(number, int) and abs(number) >= 2**63:
            raise ParameterError(f"parameter {name}: {text!r} does not fit in 64 bits")
        if spec.low is not None and number < spec.low or spec.high is not None and number > spec.high:
            shown = f"[{spec.low:g}, {'...' if spec.high is None else f'{spec.high:g}'}]"
            hint = (f"; did you mean {number:g}/255 (pixel budgets are fractions of the pixel range)?"
                    if spec.high == 1 and 1 < number <= 255 else "")
            raise ParameterError(f"parameter {name} must lie in {shown} (got {text!r}){hint}")


def _check_names(name: str, spec: Parameter, value, text: str) -> None:
    if name == "device" and isinstance(value, str):
        import torch

        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
            raise ParameterError(f"parameter device must be auto, cpu, cuda or cuda:N (got {text!r})")
        if value.startswith("cuda"):
            index = int(value.split(":")[1]) if ":" in value else 0
            if not torch.cuda.is_available() or index >= torch.cuda.device_count():
                raise ParameterError(f"device {value!r} was asked for, but this machine has "
                                     f"{torch.cuda.device_count() if torch.cuda.is_available() else 'no'} CUDA "
                                     f"device(s); use cpu or auto")
    if "zoo recipe" in spec.help and value is not None:
        from ..training.zoo import RECIPES

        unknown = [v for v in (value if isinstance(value, (list, tuple)) else [value]) if v not in RECIPES]
        if unknown:
            raise ParameterError(f"parameter {name}: no zoo recipe named {', '.join(map(repr, unknown))}; the recipes "
                                 f"are {', '.join(sorted(RECIPES))}")


_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _number_expression(node):
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _number_expression(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](_number_expression(node.left), _number_expression(node.right))
    raise ValueError("not arithmetic on numbers")


def parse_value(text: str):
    """A command-line value: a Python literal, arithmetic on numbers (``8/255``), else the text
    itself (a bare word such as ``cuda``)."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        pass
    try:
        return _number_expression(ast.parse(text, mode="eval").body)
    except (ValueError, SyntaxError, ZeroDivisionError):
        return text


def _matches(value, annotation: ast.expr) -> bool:
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _matches(value, annotation.left) or _matches(value, annotation.right)
    if isinstance(annotation, ast.Constant) and annotation.value is None:
        return value is None
    if isinstance(annotation, ast.Name):
        kind = annotation.id
        if kind == "int":
            return type(value) is int
        if kind == "float":
            return type(value) in (int, float)
        if kind in ("str", "bool"):
            return type(value) is {"str": str, "bool": bool}[kind]
        raise ParameterError(f"unsupported parameter type {kind!r}")
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name):
        container = annotation.value.id
        inner = annotation.slice
        if container == "list":
            return isinstance(value, list) and all(_matches(v, inner) for v in value)
        if container == "tuple":
            items = inner.elts if isinstance(inner, ast.Tuple) else [inner]
            if not isinstance(value, (tuple, list)):
                return False
            if len(items) == 2 and isinstance(items[1], ast.Constant) and items[1].value is Ellipsis:
                return all(_matches(v, items[0]) for v in value)
            return len(value) == len(items) and all(_matches(v, t) for v, t in zip(value, items))
    raise ParameterError(f"unsupported parameter type {ast.unparse(annotation)!r}")


def _negative(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return value < 0
    if isinstance(value, (list, tuple)):
        return any(_negative(v) for v in value)
    return False


def check_overrides(parameters: dict[str, Parameter], overrides: dict[str, str], chapter: str = "the chapter") -> dict:
    """Parse and check ``overrides`` (name -> text from the command line) against ``parameters``;
    the parsed values, or a :class:`ParameterError` that says what is wrong and what is valid."""
    values = {}
    for name, text in overrides.items():
        if name not in parameters:
            raise ParameterError(f"{chapter} has no parameter {name!r}; its parameters are: {', '.join(parameters)}")
        spec = parameters[name]
        value = parse_value(text) if isinstance(text, str) else text
        if not _matches(value, ast.parse(spec.annotation, mode="eval").body):
            raise ParameterError(
                f"parameter {name} expects {spec.annotation} (default {spec.default}); got {text!r}. "
                f"Lists are written [1, 2], tuples (1, 2), text as a word or in quotes."
            )
        if _negative(value):
            raise ParameterError(f"parameter {name} must not be negative (got {text!r})"
                                 + (f": {spec.help}" if spec.help else ""))
        if spec.choices and value is not None and value not in spec.choices:
            raise ParameterError(f"parameter {name} must be one of {', '.join(spec.choices)} (got {value!r})")
        _check_range(name, spec, value, text)
        _check_names(name, spec, value, text)
        values[name] = value
    return values
