#!/usr/bin/env python3
"""The API agrees with its OpenAPI document.

Usage: python3 Tests/openapi/check.py schemas/openapi.yaml [EXCHANGES.jsonl]

1. The document is OpenAPI 3.1: valid against the OpenAPI Initiative's own JSON Schema for 3.1
   (oas-3.1.schema.json beside this file, https://spec.openapis.org/oas/3.1/schema/2022-10-07,
   Apache-2.0), and every `$ref` in it resolves.
2. Each exchange (one JSON object per line: method, path, status, contentType, body), as the
   end-to-end test recorded it from the real `agentry serve`, matches an operation of the document
   (path template and method), its status is one the operation declares, its content type is the
   declared one, and a JSON body validates against the declared schema (`additionalProperties:
   false` throughout, so an undocumented field fails too; `date-time` checked as RFC 3339).

Prints what was checked; exits 1 with every disagreement.
"""
import json
import re
import sys
from datetime import datetime
from pathlib import Path

import jsonschema
import yaml


def load(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def refs(node, trail=""):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield trail, value
            else:
                yield from refs(value, f"{trail}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from refs(value, f"{trail}/{index}")


def resolve(document, ref):
    if not ref.startswith("#/"):
        return None
    node = document
    for part in ref[2:].split("/"):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def check_document(document, problems):
    oas = json.loads((Path(__file__).parent / "oas-3.1.schema.json").read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(oas)
    for error in validator.iter_errors(document):
        problems.append(f"not OpenAPI 3.1 at /{'/'.join(map(str, error.absolute_path))}: {error.message}")
    for trail, ref in refs(document):
        if resolve(document, ref) is None:
            problems.append(f"{trail}: $ref {ref} does not resolve")


def rfc3339(value):
    if not isinstance(value, str):
        return True
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", value):
        return False
    try:
        datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return False
    return True


def operation_for(document, method, path):
    """The operation (and its template) whose path template matches; a last `{path}` may hold `/`."""
    for template, item in document["paths"].items():
        pattern = "^"
        for piece in re.split(r"(\{[^}]+\})", template):
            if piece == "{path}":
                pattern += "(.+)"
            elif piece.startswith("{"):
                pattern += "([^/]+)"
            else:
                pattern += re.escape(piece)
        if re.fullmatch(pattern + "$", path) and method.lower() in item:
            return template, item[method.lower()]
    return None, None


def check_exchanges(document, exchanges, problems):
    checker = jsonschema.FormatChecker()
    checker.checks("date-time")(rfc3339)
    covered = set()
    for number, exchange in enumerate(exchanges, 1):
        method, path, status = exchange["method"], exchange["path"].split("?")[0], str(exchange["status"])
        where = f"exchange {number}: {method} {exchange['path']} -> {status}"
        template, operation = operation_for(document, method, path)
        if operation is None:
            problems.append(f"{where}: no such operation in the document")
            continue
        response = operation.get("responses", {}).get(status)
        if response is None:
            problems.append(f"{where}: status {status} is not declared for {method} {template}")
            continue
        if "$ref" in response:
            response = resolve(document, response["$ref"])
        covered.add((method.upper(), template, status))
        content = response.get("content")
        if not content:
            if exchange.get("body"):
                problems.append(f"{where}: declared without a body, answered with one")
            continue
        media = (exchange.get("contentType") or "").split(";")[0].strip()
        if media not in content:
            problems.append(f"{where}: content type {media!r}, declared {sorted(content)}")
            continue
        schema = content[media].get("schema", {})
        if media != "application/json":
            continue
        try:
            body = json.loads(exchange["body"])
        except ValueError as error:
            problems.append(f"{where}: the body is not JSON: {error}")
            continue
        rooted = dict(schema)
        rooted["components"] = document["components"]
        validator = jsonschema.Draft202012Validator(rooted, format_checker=checker)
        for error in sorted(validator.iter_errors(body), key=lambda e: list(e.absolute_path)):
            at = "/".join(map(str, error.absolute_path))
            problems.append(f"{where}: at /{at}: {error.message}")
    return covered


def main():
    if len(sys.argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    document = load(sys.argv[1])
    problems = []
    check_document(document, problems)
    covered = set()
    if len(sys.argv) == 3:
        with open(sys.argv[2], encoding="utf-8") as handle:
            exchanges = [json.loads(line) for line in handle if line.strip()]
        covered = check_exchanges(document, exchanges, problems)
        print(f"{len(exchanges)} exchanges, {len(covered)} operation-status pairs:")
        for method, template, status in sorted(covered, key=lambda c: (c[1], c[0], c[2])):
            print(f"  {method} {template} {status}")
    for problem in problems:
        print("DISAGREES: " + problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
