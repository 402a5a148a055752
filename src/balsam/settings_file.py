"""Reading ``settings.yml``: its text, its YAML, and one line for whatever is wrong with it.

:func:`balsam.config.load_settings` reads a file through here. Every problem becomes a
:class:`~balsam.errors.ConfigError` of one line naming the file, the line and the key path:
text that is not UTF-8, YAML errors (with the key the error is in), a top level that is not a
mapping, an empty file, a key given twice, and what pydantic refuses (unknown keys with the
known ones, wrong types, values out of range). YAML is read with the safe loader, which also
reads ``1e3`` as a number; each node is visited once, so a file of repeated aliases is cheap.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict
from pydantic import ValidationError as PydanticValidationError

from balsam.errors import ConfigError, NotFound

SETTINGS_FILE = "settings.yml"
#: The largest settings file read: ``balsam init`` writes under 1 KiB.
MAX_SETTINGS_BYTES = 1 << 20
# C0 and C1 controls, DEL, and lone surrogates (undecodable bytes): nothing a setting needs, and
# each one breaks a URL, an environment block or a command line it is passed to.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _plain_text(value: str) -> str:
    """A setting's text, refused when it holds a control character or undecodable bytes."""
    found = CONTROL.search(value)
    if found:
        raise ValueError(f"holds the control character {found.group()!r}")
    return value


#: Text in ``settings.yml``: one line, printable.
SettingText = Annotated[str, AfterValidator(_plain_text)]
#: Every settings model: unknown keys and non-finite numbers are refused.
SETTINGS_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)

# A key path in the file: section, key, list index.
Loc = tuple[str | int, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _SettingsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e3`` (YAML 1.2 style, no dot) as the number it looks like.

    YAML 1.1 makes ``1e3`` a string, which a number field would refuse as "not a number".
    """


_SettingsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def read_settings_text(path: Path, file: Path) -> str:
    """The file's text; NotFound when there is none, ConfigError when it is not UTF-8 text."""
    try:
        with file.open("rb") as fh:
            data = fh.read(MAX_SETTINGS_BYTES + 1)
    except FileNotFoundError:
        raise NotFound(f"{path} is not a Balsam workflow database (no {SETTINGS_FILE})") from None
    except OSError as exc:
        raise ConfigError(one_line(f"cannot read {file}: {exc.strerror or exc}")) from None
    if len(data) > MAX_SETTINGS_BYTES:
        raise ConfigError(one_line(f"{file}: larger than 1 MiB: not a Balsam settings file"))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
        raise ConfigError(
            one_line(f"{file}, line {line}: not UTF-8 text (byte 0x{byte:02x})")
        ) from None


def parse_settings(
    file: Path, text: str, model: type[BaseModel]
) -> tuple[dict[str, Any], dict[Loc, int]]:
    """The file's mapping and the line of each key path in it."""
    try:
        node, data = _compose(text)
        lines = _key_lines(file, node) if node is not None else {}
    except yaml.YAMLError as exc:
        raise ConfigError(one_line(_yaml_problem(file, text, exc))) from None
    except RecursionError:
        raise ConfigError(one_line(f"{file}: nested too deeply for a settings file")) from None
    if node is None or data is None:
        raise ConfigError(one_line(f"{file}: is empty ('balsam init' writes every section)"))
    if not isinstance(data, dict):
        kind = _KINDS.get(type(data), type(data).__name__)
        sections = ", ".join(model.model_fields)
        raise ConfigError(
            one_line(
                f"{file}, line {node.start_mark.line + 1}: the top level is {kind}, not a "
                f"mapping of sections ({sections})"
            )
        )
    # "launcher:" with every key commented out is a section left at its defaults.
    known = model.model_fields
    return {k: {} if v is None and k in known else v for k, v in data.items()}, lines


# What a YAML top level that is not a mapping is, in a user's words.
_KINDS: dict[type, str] = {list: "a list", str: "text", int: "a number", float: "a number"}


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree and its Python value (YAMLError when it is not YAML)."""
    loader = _SettingsLoader(text)
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def _key_lines(file: Path, root: yaml.Node) -> dict[Loc, int]:
    """The 1-based line of every key and list item under ``root``; a key given twice in one
    mapping is a ConfigError (YAML would keep the last one silently)."""
    lines: dict[Loc, int] = {}
    # Each node once: aliases may share one node many times over (a "billion laughs").
    seen: set[int] = set()
    pending: list[tuple[yaml.Node, Loc]] = [(root, ())]
    while pending:
        node, loc = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*loc, index)] = item.start_mark.line + 1
                pending.append((item, (*loc, index)))
        elif isinstance(node, yaml.MappingNode):
            pending += _mapping_lines(file, node, loc, lines)
    return lines


def _mapping_lines(
    file: Path, node: yaml.MappingNode, loc: Loc, lines: dict[Loc, int]
) -> list[tuple[yaml.Node, Loc]]:
    """Record the lines of one mapping's keys; returns its values to visit."""
    children: list[tuple[yaml.Node, Loc]] = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            continue
        here = (*loc, key.value)
        line = key.start_mark.line + 1
        if here in lines:
            raise ConfigError(
                one_line(
                    f"{file}, line {line}: {key_path(here)}: given twice (first on line "
                    f"{lines[here]})"
                )
            )
        lines[here] = line
        children.append((value, here))
    return children


def _yaml_problem(file: Path, text: str, exc: yaml.YAMLError) -> str:
    """One line for a YAML error: where, under which key, and what YAML says."""
    line: int | None = None
    problem = str(exc).splitlines()[0]
    parsed = text
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or problem
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        problem = f"unacceptable character #x{exc.character:04x}"
        # The reader refuses the character before parsing starts: the key is in what precedes.
        parsed = text[: exc.position]
    path = _path_at_error(parsed)
    under = f"{key_path(path)}: " if path else ""
    return f"{at(file, line)}: {under}invalid YAML: {problem}"


@dataclass
class _Open:
    """A collection the parser is inside, for :func:`_path_at_error`."""

    loc: Loc
    mapping: bool
    expect_key: bool = True
    #: The key whose value is being read, or the index of the item being read.
    child: str | int | None = None
    index: int = 0

    def path(self) -> Loc:
        """Where the parser is: this collection, and the key or item inside it."""
        return self.loc if self.child is None else (*self.loc, self.child)


def _path_at_error(text: str) -> Loc:
    """The key path YAML was inside when it stopped parsing ``text``; for text that parses,
    the path of its last node (``()`` at the top)."""
    stack: list[_Open] = []
    last: Loc = ()
    try:
        for event in yaml.parse(text, Loader=_SettingsLoader):
            last = _follow(event, stack) or last
    except (yaml.YAMLError, RecursionError):
        return stack[-1].path() if stack else ()
    return last


def _follow(event: yaml.Event, stack: list[_Open]) -> Loc | None:
    """Advance :func:`_path_at_error`'s stack of open collections by one parser event;
    returns the path of the node the event starts, if it starts one."""
    if isinstance(event, yaml.CollectionEndEvent):
        stack.pop()
        _node_done(stack)
        return None
    if not isinstance(event, yaml.NodeEvent):
        return None
    top = stack[-1] if stack else None
    if top is not None and top.mapping and top.expect_key:
        top.child = event.value if isinstance(event, yaml.ScalarEvent) else "?"
    elif top is not None and not top.mapping:
        top.child = top.index
    here = top.path() if top else ()
    if isinstance(event, yaml.CollectionStartEvent):
        stack.append(_Open(loc=here, mapping=isinstance(event, yaml.MappingStartEvent)))
    else:
        _node_done(stack)
    return here


def _node_done(stack: list[_Open]) -> None:
    """A node ended inside the innermost open collection: a key, a value or an item."""
    if not stack:
        return
    top = stack[-1]
    if top.mapping and top.expect_key:
        top.expect_key = False  # the key is read; its value comes next, under it
        return
    top.expect_key = True
    top.child = None
    top.index += 1


def at(file: Path, line: int | None) -> str:
    """``FILE, line N`` (or the file alone when there is no line)."""
    return f"{file}, line {line}" if line else str(file)


def key_path(loc: Loc) -> str:
    """``launcher.heartbeat_seconds``, ``platform.mpi_launcher_args[0]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text or "(top level)"


def validation_problem(
    file: Path, exc: PydanticValidationError, lines: dict[Loc, int], model: type[BaseModel]
) -> str:
    """One line for the first problem pydantic found (and how many more there are)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc: Loc = tuple(first["loc"])
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{at(file, line_of(loc, lines))}: {key_path(loc)}: {_describe(first, loc, model)}{more}"


def line_of(loc: Loc, lines: dict[Loc, int]) -> int | None:
    """The line of ``loc``, else of the nearest enclosing key that is in the file."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _describe(error: Any, loc: Loc, model: type[BaseModel]) -> str:
    """Pydantic's message in Balsam's words: lower case, the value it got, the known keys."""
    kind = error["type"]
    if kind == "extra_forbidden":
        known = ", ".join(_known_keys(loc[:-1], model))
        what = "section" if len(loc) == 1 else "setting"
        return f"unknown {what} (known: {known})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "should be a mapping of settings (one 'key: value' per line)"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:] + _got(kind, error.get("input"))


# Error types of a number field: the text it got is shown (no secret goes in a number field).
_NUMBER_ERRORS = ("float_type", "int_type", "float_parsing", "int_parsing", "int_from_float")


def _got(kind: str, value: object) -> str:
    """`` (got X)`` for a scalar that a number field refused, else nothing."""
    if isinstance(value, bool | int | float) and kind != "value_error":
        return f" (got {value!r})"
    if isinstance(value, str) and kind in _NUMBER_ERRORS:
        return f" (got {value[:40]!r})"
    return ""


def _known_keys(loc: Loc, top: type[BaseModel]) -> list[str]:
    """The keys the settings model at ``loc`` (under ``top``) takes."""
    model = top
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def one_line(message: str) -> str:
    """``message`` with control characters escaped: a key or a path holding a newline must
    not break the one line the CLI prints."""
    return CONTROL.sub(lambda m: repr(m.group())[1:-1], message)
