"""A chapter's parameters, read from its ``parameters`` cell, and the check of a reader's overrides
before anything executes.

Each line of the cell is ``name: type = default  # help``. The type is one of ``int``, ``float``,
``str``, ``bool``, ``list[T]``, ``tuple[T, ...]``, ``tuple[T1, T2]`` or a union with ``None``; a
``str`` whose help starts with ``a | b | c`` accepts only those words. Every number of the book is a
count, size, budget or seed, so **negative numbers are refused**. Values on the command line are
Python literals (``500``, ``"cuda"``, ``[1, 2]``, ``None``) or arithmetic on numbers (``8/255``).
"""

from __future__ import annotations

import ast
import json
import operator
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
        name = node.target.id
        found[name] = Parameter(name, ast.unparse(node.annotation), ast.unparse(node.value), help_text, choices)
    return found


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
        values[name] = value
    return values
