"""Reading sweep files and presets; every problem becomes one ``label: path: message`` line.

``parse`` turns YAML errors and pydantic's validation errors into one line per problem, with
control characters escaped (``sweeper.errors.one_line``) and pydantic's union tags removed from
field paths, in the file's order of keys.
"""

from __future__ import annotations

import copy
import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from sweeper.errors import SpecError, one_line
from sweeper.spec.params import FORM_TAGS, FORMS, FORMS_TEXT, UNION_TAGS
from sweeper.spec.schema import SECTIONS, SweepSpec
from sweeper.spec.text import key_text, show_value, unknown

MAX_NODES = 100_000
"""Values a sweep file may hold after YAML aliases are expanded (an alias bomb is refused)."""
MAX_DEPTH = 40
"""Nesting depth a sweep file may have (real ones use 5)."""

class _Loader(yaml.SafeLoader):
    """SafeLoader that reads ``1e-4`` as a float (YAML 1.2) and refuses duplicate keys."""

    def construct_mapping(self, node: yaml.Node, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge" or not isinstance(key_node, yaml.ScalarNode):
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.get(key)
                except TypeError:
                    continue
                if first is not None:
                    raise yaml.constructor.ConstructorError(
                        None,
                        None,
                        f"duplicate key {show_value(key)} (first at line {first + 1})",
                        key_node.start_mark,
                    )
                seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)  # type: ignore[arg-type]


_Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def preset_names() -> list[str]:
    root = resources.files("search_spaces")
    return sorted(p.name[: -len(".yaml")] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_text(name: str) -> str:
    return resources.files("search_spaces").joinpath(f"{name}.yaml").read_text(encoding="utf-8")


def _read(path: Path) -> str:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise SpecError([f"{path}: cannot read ({e.strerror or e})"]) from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise SpecError(
            [f"{path}: not UTF-8 text (byte 0x{data[e.start]:02x} at offset {e.start}); save it as UTF-8"]
        ) from None


def resolve_source(spec: str | Path | None) -> tuple[str, str]:
    """(label, YAML text) for a path or a preset name; ``None`` means the demo preset."""
    if spec is None:
        return "preset 'demo'", preset_text("demo")
    text = str(spec)
    if text in preset_names() and not Path(text).exists():
        return f"preset {text!r}", preset_text(text)
    try:
        path = Path(spec)
        looks_like_path = path.suffix in (".yaml", ".yml") or "/" in text or path.exists()
        is_file = path.is_file()
    except (OSError, ValueError):
        raise SpecError([f"{show_value(text)}: not a readable path or a preset name"]) from None
    if looks_like_path:
        if not is_file:
            what = "a folder, not a sweep file" if path.is_dir() else "no such sweep file"
            raise SpecError([f"{path}: {what} (or pass a preset name: {', '.join(preset_names())})"])
        return str(path), _read(path)
    raise SpecError(
        [unknown("preset", text, preset_names()).replace("; valid:", "; valid presets:") + " (or a .yaml path)"]
    )


def _shape_problem(data: Any) -> str | None:
    """Refuse absurd nesting or size (YAML alias bombs) before pydantic walks it."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    nodes = 0
    while stack:
        x, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return f"too large: more than {MAX_NODES:,} values (after expanding YAML aliases)"
        if depth > MAX_DEPTH:
            return f"nested more than {MAX_DEPTH} levels deep; a sweep file needs about 5"
        if isinstance(x, dict):
            stack += [(k, depth + 1) for k in x] + [(v, depth + 1) for v in x.values()]
        elif isinstance(x, (list, tuple, set)):
            stack += [(v, depth + 1) for v in x]
    return None


def parse(text: str, label: str) -> SweepSpec:
    """Parse and validate YAML text; every problem becomes one ``label: path: message`` line."""
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.reader.ReaderError as e:
        char = e.character if isinstance(e.character, int) else ord(str(e.character)[:1] or "?")
        raise SpecError(
            [f"{label}: invalid YAML at character {e.position + 1}: unacceptable character #x{char:04x} "
             "(control characters must be written as escapes inside double quotes)"]
        ) from None  # fmt: skip
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or (str(e).splitlines() or ["unreadable"])[0]
        raise SpecError([f"{label}: invalid YAML{where}: {problem}"]) from None
    except RecursionError:
        raise SpecError([f"{label}: invalid YAML: nested too deeply"]) from None
    if data is None:
        raise SpecError([f"{label}: the file is empty; a sweep file is a YAML mapping with at least `name`"])
    return from_data(data, label)


def from_data(data: Any, label: str) -> SweepSpec:
    """Validate an already-parsed mapping (e.g. the spec stored in ``sweep.json`` for ``resume``).

    Raises SpecError with one ``label: path: message`` line per problem, like ``parse``. Every
    problem is reported in one pass: pydantic stops at a field's first failing stage and runs the
    cross-field rules only once every field is valid, so each round drops the fields that failed
    (a bad ``space.scale`` then no longer hides an unknown ``space.normalizer``, nor a sampler
    rule) and validates again, up to ``MAX_ROUNDS``. Problems a later round finds under a dropped
    path are about defaults the user never wrote, and are not reported.
    """
    if not isinstance(data, dict):
        raise SpecError([f"{label}: expected a YAML mapping with at least `name`, got {show_value(data)}"])
    problem = _shape_problem(data)
    if problem:
        raise SpecError([f"{label}: {problem}"])
    current = copy.deepcopy(data)
    found: list[dict[str, Any]] = []
    dropped: set[tuple] = set()
    try:
        for _ in range(MAX_ROUNDS):
            try:
                spec = SweepSpec.model_validate(current)
            except ValidationError as e:
                errors = [x for x in e.errors() if not _under(_clean_loc(x["loc"]), dropped)]
                found += errors
                paths = {_drop_path(_clean_loc(x["loc"]), current) for x in e.errors()} - dropped
                if not paths:
                    break
                for path in paths:
                    _drop(current, path)
                dropped |= paths
                continue
            if not found:
                return spec
            break
    except RecursionError:
        raise SpecError([f"{label}: nested too deeply"]) from None
    raise SpecError(_format_errors(label, found, order=list(data)))


MAX_ROUNDS = 6
"""Validation rounds of :func:`from_data` (each drops what failed); real files need 2 or 3."""


def _clean_loc(loc: tuple) -> tuple:
    """A pydantic location without its union tags: the path as the user wrote it."""
    return tuple(x for x in loc if x not in UNION_TAGS and x != "[key]")


def _under(loc: tuple, dropped: set[tuple]) -> bool:
    return any(loc[: len(d)] == d for d in dropped)


def _drop_path(loc: tuple, data: dict[str, Any]) -> tuple:
    """What to remove so the next round can get past this error: the parameter, the field, the section."""
    if not loc:
        return ()
    head = loc[0]
    if head == "space" and isinstance(data.get("space"), list) and len(loc) >= 2:
        return loc[:3]  # ("space", block, parameter), or ("space", block) for a block that is no mapping
    if head in ("train", "space", *SECTIONS) and isinstance(data.get(head), dict) and len(loc) >= 2:
        return loc[:2]
    return loc[:1]


def _drop(data: dict[str, Any], path: tuple) -> None:
    if path == ("name",) or path == ():
        data["name"] = "placeholder"  # required: keep validating the rest under a valid name
        return
    node: Any = data
    for key in path[:-1]:
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return
    if isinstance(node, dict):
        node.pop(path[-1], None)
    elif isinstance(node, list) and isinstance(path[-1], int) and 0 <= path[-1] < len(node):
        node[path[-1]] = {}  # an empty block in place: the other blocks keep their numbers


def load(spec: str | Path | None) -> SweepSpec:
    label, text = resolve_source(spec)
    return parse(text, label)


# --- error messages -----------------------------------------------------------------------
def _path(loc: list[Any]) -> str:
    out = ""
    for x in loc:
        out += f"[{x}]" if isinstance(x, int) and not isinstance(x, bool) else ("." if out else "") + key_text(x)
    return out


def _valid_keys(raw: tuple) -> list[str]:
    """The keys allowed where an unknown key ``raw[-1]`` was found."""
    parent = raw[:-1]
    for x in reversed(parent):
        if x in FORM_TAGS:
            return list(FORM_TAGS[x].model_fields)
    if not parent:
        return list(SweepSpec.model_fields)
    if len(parent) == 1 and parent[0] in SECTIONS:
        return list(SECTIONS[parent[0]].model_fields)
    return []


def _message(e: dict[str, Any]) -> str:
    kind, raw, given = e["type"], e["loc"], e.get("input")
    if kind == "extra_forbidden":
        return unknown("key", raw[-1], _valid_keys(raw), shown=False)
    if kind == "missing":
        return "required field is missing"
    if kind == "param_form":
        if isinstance(given, dict) and sum(k in given for k in FORMS) > 1:
            both = " and ".join(k for k in FORMS if k in given)
            return f"expected one of {FORMS_TEXT}, got both {both}"
        extra = " (write `{choice: [...]}` or `{grid: [...]}`)" if isinstance(given, list) else ""
        return f"expected a value or one of {FORMS_TEXT}: got {show_value(given)}{extra}"
    if kind == "space_form":
        return (
            f"expected a mapping of parameters, or a list of mappings (a union of grids), got {show_value(given)}"
        )
    if "[key]" in raw:
        return f"keys must be strings, got {show_value(given)}"
    msg = e["msg"].removeprefix("Value error, ")
    if kind in ("sweep_spec", "scalar", "range", "value_error"):
        return msg
    if kind == "too_short":
        n = (e.get("ctx") or {}).get("min_length", 1)
        return f"needs at least {n} item{'s' if n != 1 else ''}, got {show_value(given)}"
    if kind == "string_pattern_mismatch":
        rule = "1-80 letters, digits, '_', '.' or '-', starting with a letter or digit"
        return f"must be {rule}, got {show_value(given)}"
    if kind in _TYPE_WORDS:
        return f"must be {_TYPE_WORDS[kind]}, got {show_value(given)}"
    msg = msg.replace("Input should be ", "must be ")
    return f"{msg}, got {show_value(given)}" if "got" not in msg else msg


_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "float_type": "a number", "float_parsing": "a number", "finite_number": "a finite number",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "list_type": "a list", "tuple_type": "a list", "dict_type": "a mapping", "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}  # fmt: skip


def _format_errors(label: str, errors: list[dict[str, Any]], order: list[Any] | None = None) -> list[str]:
    """One line per problem: ``label: path: message``, in the file's order of top-level keys.

    Pydantic's union tags are removed from paths; ``order`` (the file's top-level keys)
    sorts the lines, since pydantic lists unknown keys after every known field.
    """
    rank = {k: i for i, k in enumerate(order or []) if isinstance(k, (str, int))}
    errors = sorted(errors, key=lambda e: rank.get(e["loc"][0], len(rank)) if e["loc"] else -1)
    lines: list[str] = []
    for e in errors:
        path = _path(list(_clean_loc(e["loc"])))
        line = one_line(f"{label}: {path}: {_message(e)}" if path else f"{label}: {_message(e)}")
        if line not in lines:
            lines.append(line)
    return lines


def json_schema() -> dict[str, Any]:
    return SweepSpec.model_json_schema()
