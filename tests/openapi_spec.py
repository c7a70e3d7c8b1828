"""Read an OpenAPI-generated Python client (kfp-server-api, kubernetes) as the API's spec.

The stand-ins in tests/ play API servers that cannot run here. They must accept exactly what the
real API defines, and they learn it from the generated client that the project already installs
(no spec file outside the repository): every operation's path, method, query parameters (their
wire names and types), required parameters, body, file parts, authentication and response type
from the generated `api/*_api.py` methods, and every message's fields from the models'
`openapi_types` / `attribute_map` (output-only fields from their "Output." docs, enum values from
`allowable_values`).
"""

from __future__ import annotations

import ast
import email.parser
import email.policy
import functools
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import ModuleType


class Rejected(Exception):
    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass
class Operation:
    method: str
    template: str
    pattern: re.Pattern
    param_names: list[str]
    op_id: str  # the generated client's method name, e.g. upload_pipeline
    query: dict[str, str]  # name -> type
    required: set[str]  # the generated method's positional parameters (Python names)
    required_query: set[str]  # the query parameters among them (wire names)
    body: tuple[str, str] | None  # (parameter name, model type)
    files: list[str]
    secured: bool
    response_type: str | None


def _operation(func: ast.FunctionDef, lines: list[str]) -> Operation:
    """One operation from a generated `<op>_with_http_info` method (its code and docstring)."""
    code = "\n".join(lines[func.lineno - 1 : func.end_lineno])
    doc = ast.get_docstring(func) or ""
    # Two generator styles: ":param name: ... :type name: T" and ":param T name: ..."
    types = {n: t.strip() for n, t in re.findall(r":type (\w+): ([^\n]+)", doc)}
    types.update({n: t for t, n in re.findall(r":param (\S+) (\w+):", doc)})
    wire = dict(re.findall(r"query_params\.append\(\('(\w+)', local_var_params\['(\w+)'\]", code))
    call = next(
        n for n in ast.walk(func)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr == "call_api"
    )
    template, method = call.args[0].value, call.args[1].value
    response = next((k.value.value for k in call.keywords if k.arg == "response_type"), None)
    body = re.search(r"body_params = local_var_params\['(\w+)'\]", code)
    names = re.findall(r"\{([^}]+)\}", template)
    return Operation(
        method=method, template=template, op_id=func.name.removesuffix("_with_http_info"),
        pattern=re.compile("^" + re.sub(r"\{[^}]+\}", "([^/]+)", template) + "$"), param_names=names,
        query={n: types.get(python, "str") for n, python in wire.items()},
        required={a.arg for a in func.args.args[1:]},
        required_query={n for n, python in wire.items() if python in {a.arg for a in func.args.args[1:]}},
        body=(body.group(1), types[body.group(1)]) if body else None,
        files=re.findall(r"local_var_files\['(\w+)'\]", code),
        secured=re.search(r"auth_settings = \[(.*?)\]", code).group(1).strip() != "",
        response_type=response,
    )


@functools.lru_cache(maxsize=None)
def load_operations(package: ModuleType, pattern: str = "*_api.py") -> list[Operation]:
    """Every operation of a generated client package, most specific paths first."""
    ops = []
    for path in sorted((Path(package.__file__).parent / "api").glob(pattern)):
        source = path.read_text()
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef) and node.name.endswith("_with_http_info"):
                ops.append(_operation(node, lines))
    if not ops:
        raise RuntimeError(f"no operations found in {package.__file__}; is it an OpenAPI-generated client?")
    # Literal segments beat parameters: /pipelines/upload is not /pipelines/{pipeline_id}.
    return sorted(ops, key=lambda o: (o.template.count("{"), -len(o.template)))


# ---------------------------------------------------------------- strict schema checks


def _output_only(model: type, attribute: str) -> bool:
    doc = (getattr(model, attribute).__doc__ or "").split(":return:")[0]
    return re.search(r"\bOutput( only)?\.", doc) is not None


def check(value, kind: str, models: ModuleType, where: str, request: bool) -> None:
    """Raise Rejected(400) unless `value` is exactly what the generated type `kind` allows."""
    bad = lambda what: Rejected(400, 3, f"{where}: {what}")  # noqa: E731
    if kind.startswith("list["):
        if not isinstance(value, list):
            raise bad("expected an array")
        for i, item in enumerate(value):
            check(item, kind[5:-1], models, f"{where}[{i}]", request)
    elif kind.startswith("dict("):
        if not isinstance(value, dict):
            raise bad("expected an object")
        for k, v in value.items():
            check(v, kind[5:-1].split(",", 1)[1].strip(), models, f"{where}.{k}", request)
    elif kind == "str":
        if not isinstance(value, str):
            raise bad(f"expected a string, got {type(value).__name__} {value!r}")
    elif kind == "datetime":
        if not isinstance(value, str):
            raise bad(f"expected a date-time string, got {value!r}")
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    elif kind == "bool":
        if not isinstance(value, bool):
            raise bad(f"expected a boolean, got {value!r}")
    elif kind in ("int", "float"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad(f"expected an integer, got {value!r}")
    elif kind == "object":
        return
    else:
        _check_model(value, getattr(models, kind), models, where, request)


def _check_model(value, model: type, models: ModuleType, where: str, request: bool) -> None:
    bad = lambda what: Rejected(400, 3, f"{where}: {what}")  # noqa: E731
    if hasattr(model, "allowable_values"):  # an enum
        if value not in model.allowable_values:
            raise bad(f"{value!r} is not one of {model.allowable_values}")
        return
    if not isinstance(value, dict):
        raise bad(f"expected an object, got {type(value).__name__}")
    by_json = {json_name: attr for attr, json_name in model.attribute_map.items()}
    for k, v in value.items():
        if k not in by_json:
            raise bad(f"unknown field {k!r}")
        if request and _output_only(model, by_json[k]):
            raise bad(f"field {k!r} is output only")
        check(v, model.openapi_types[by_json[k]], models, f"{where}.{k}", request)


def check_query(op: Operation, query: dict[str, list[str]]) -> dict[str, str]:
    for name in query:
        if name not in op.query:
            raise Rejected(400, 3, f"{op.op_id}: unknown query parameter {name!r}")
    for name, kind in op.query.items():
        if name in op.required_query and name not in query:
            raise Rejected(400, 3, f"{op.op_id}: missing query parameter {name!r}")
        if name in query and kind == "int" and not re.fullmatch(r"-?\d+", query[name][0]):
            raise Rejected(400, 3, f"{op.op_id}: query parameter {name!r} is not an integer")
    return {k: v[0] for k, v in query.items()}


def parse_multipart(content_type: str, body: bytes) -> dict[str, tuple[str | None, bytes]]:
    if not content_type.startswith("multipart/form-data") or "boundary=" not in content_type:
        raise Rejected(400, 3, f"expected multipart/form-data with a boundary, got {content_type!r}")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        parts[name] = (part.get_filename(), part.get_payload(decode=True))
    return parts
