#!/usr/bin/env python3
"""Schema agreement: agentry's validator and the published JSON Schemas must judge alike.

Usage: python3 Tests/schema-agreement/check.py --agentry PATH_TO_BINARY [--verbose]

Every resource document of every example repository (examples/*/) and of the corpus
(Tests/schema-agreement/corpus/) is validated twice:

* by the real `agentry validate --dir FOLDER -o json`: a document is invalid when agentry reports
  at least one diagnostic of category `schema` for it (`reference` and `policy` diagnostics see
  across files or look for credentials, which a JSON Schema cannot, so they are ignored);
* by Python `jsonschema` against schemas/resource.schema.json (SKILL.md front matter against
  schemas/skill.schema.json), after loading the YAML under the YAML 1.2 core schema as agentry does.

The two verdicts must be equal. Corpus files and skill folders whose name starts with `valid-`
must also be valid on both sides, every other corpus case invalid on both; examples must be valid.
Each corpus file holds one case (several documents in a `valid-` file are judged one by one).

Comment lines in a corpus case (in SKILL.md, inside the front matter):
  `# at: PATH`  where an invalid case breaks (`spec.resources.cpus`, `spec.skills.0`, `document`);
                required for invalid cases: each side must report an error at PATH or below it, so
                a case that breaks somewhere else by mistake (a wrong indent, say) fails.
  `# known-difference: WHY`  the two sides are meant to disagree on this case; it then passes only
                while they still do.

Pattern dialect: JSON Schema patterns are ECMA-262, while `jsonschema` runs them through Python's
`re`. The `pattern` keyword is therefore evaluated after translating the ECMA constructs whose
meaning differs in Python (`$`, `.`, `\\s`, `\\d`, `\\w`); see `ecma_to_python`.
"""

from __future__ import annotations

import argparse
import functools
import json
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import jsonschema
import yaml
from jsonschema import validators

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
CORPUS = HERE / "corpus"
EXAMPLES = ROOT / "examples"
SCHEMAS = ROOT / "schemas"
MIN_INVALID_CASES = 40

# ---------------------------------------------------------------------------------------------
# YAML 1.2 core schema, as agentry resolves plain scalars (Sources/AgentryYAML/YAMLNode.swift):
# null ~/null/Null/NULL/empty, booleans true/True/TRUE/false/False/FALSE only (YAML 1.1's
# yes/no/on/off stay strings), integers [-+]?[0-9]+, 0o.., 0x.., floats and .inf/.nan.
# No timestamps, no sexagesimal numbers, no `=` or `<<` merge keys.

_Base = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml, the parser agentry uses


class CoreLoader(_Base):  # type: ignore[misc, valid-type]
    """A safe loader that resolves plain scalars by the YAML 1.2 core schema."""


CoreLoader.yaml_implicit_resolvers = {}
CoreLoader.add_implicit_resolver(
    "tag:yaml.org,2002:null", re.compile(r"(?:~|null|Null|NULL|)\Z"), ["~", "n", "N", ""])
CoreLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"(?:true|True|TRUE|false|False|FALSE)\Z"), list("tTfF"))
CoreLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)\Z"),
    list("-+0123456789"))
CoreLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
        r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"),
    list("-+.0123456789"))


def _construct_null(loader, node):
    loader.construct_scalar(node)
    return None


def _construct_bool(loader, node):
    text = loader.construct_scalar(node)
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    raise yaml.constructor.ConstructorError(None, None, f"not a YAML 1.2 boolean: {text!r}", node.start_mark)


def _construct_int(loader, node):
    text = loader.construct_scalar(node)
    if text.startswith("0x"):
        return int(text[2:], 16)
    if text.startswith("0o"):
        return int(text[2:], 8)
    return int(text, 10)  # decimal even with leading zeros: "010" is 10, not YAML 1.1's octal 8


def _construct_float(loader, node):
    text = loader.construct_scalar(node)
    lowered = text.lower()
    if lowered in (".inf", "+.inf"):
        return float("inf")
    if lowered == "-.inf":
        return float("-inf")
    if lowered == ".nan":
        return float("nan")
    return float(text)


CoreLoader.add_constructor("tag:yaml.org,2002:null", _construct_null)
CoreLoader.add_constructor("tag:yaml.org,2002:bool", _construct_bool)
CoreLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
CoreLoader.add_constructor("tag:yaml.org,2002:float", _construct_float)


def to_json(value):
    """The value as a JSON Schema validator sees it: mapping keys are always strings in JSON."""
    if isinstance(value, dict):
        return {
            (key if isinstance(key, str) else json.dumps(to_json(key))): to_json(item)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [to_json(item) for item in value]
    return value


@dataclass
class LoadedDocument:
    line: int  # 1-based line of the document's root node
    data: object


def load_documents(text: str) -> list[LoadedDocument]:
    """Every non-empty document of a YAML stream with the line of its root (agentry skips empty ones)."""
    loader = CoreLoader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if isinstance(node, yaml.ScalarNode) and node.value == "" and node.style is None and \
                    node.tag == "tag:yaml.org,2002:null":
                continue  # an empty document: no root
            documents.append(LoadedDocument(node.start_mark.line + 1, to_json(loader.construct_document(node))))
    finally:
        loader.dispose()
    return documents


def front_matter(data: bytes) -> bytes | None:
    """SKILL.md front matter, cut exactly as agentry's SkillReader.extractFrontMatter does."""
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    lines = data.split(b"\n")

    def trimmed(line: bytes) -> bytes:
        return line.rstrip(b"\r ")

    if trimmed(lines[0]) != b"---":
        return None
    body = []
    for line in lines[1:]:
        if trimmed(line) == b"---":
            return b"".join(part + b"\n" for part in body)
        body.append(line)
    return None


# ---------------------------------------------------------------------------------------------
# ECMA-262 patterns on Python's `re`.

# ECMA-262 \s: WhiteSpace (TAB, VT, FF, SP, NBSP, ZWNBSP and every Zs) plus LineTerminator.
_ECMA_SPACE = r"\t\n\x0b\x0c\r \xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000\ufeff"
_ECMA_DOT = r"[^\n\r\u2028\u2029]"
_CLASS_ESCAPES = {"s": _ECMA_SPACE, "d": "0-9", "w": "A-Za-z0-9_"}


@functools.lru_cache(maxsize=None)
def ecma_to_python(pattern: str) -> str:
    """Translates the ECMA-262 constructs whose meaning differs in Python's `re`.

    `$` matches only at the very end (Python's also matches before a final newline), `.` excludes
    every ECMA line terminator (Python's only excludes `\\n`), and `\\s`, `\\d`, `\\w` get their
    ECMA sets (Python's are Unicode-aware and differ: `\\s` takes U+001C-U+001F and U+0085 but not
    U+FEFF). Other syntax used by the schemas means the same in both.
    """
    out: list[str] = []
    in_class = False
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if char == "\\":
            escaped = pattern[index + 1]
            index += 2
            if escaped in _CLASS_ESCAPES:
                body = _CLASS_ESCAPES[escaped]
                out.append(body if in_class else f"[{body}]")
            elif escaped.lower() in _CLASS_ESCAPES:
                if in_class:
                    raise ValueError(f"negated class escape \\{escaped} inside a class in {pattern!r}")
                out.append(f"[^{_CLASS_ESCAPES[escaped.lower()]}]")
            else:
                out.append("\\" + escaped)
            continue
        index += 1
        if in_class:
            if char == "]":
                in_class = False
            out.append(char)
        elif char == "[":
            in_class = True
            out.append(char)
            if pattern.startswith("^", index):
                out.append("^")
                index += 1
        elif char == ".":
            out.append(_ECMA_DOT)
        elif char == "$":
            out.append(r"\Z")
        else:
            out.append(char)
    return "".join(out)


def _ecma_pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not re.search(ecma_to_python(pattern), instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


EcmaValidator = validators.extend(jsonschema.Draft202012Validator, {"pattern": _ecma_pattern})


def load_schema(name: str):
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return EcmaValidator(schema)


@dataclass
class Finding:
    """One error found by one side, at a place in the document (`document` for the whole of it)."""
    path: str
    text: str


def schema_errors(validator, data) -> list[Finding]:
    findings: list[Finding] = []
    for error in sorted(validator.iter_errors(data), key=lambda error: [str(part) for part in error.absolute_path]):
        path = ".".join(str(part) for part in error.absolute_path) or "document"
        found = Finding(path, f"{path}: {one_line(error.message)}")
        if found not in findings:  # resource.schema.json checks apiVersion and kind twice: at the top and per kind
            findings.append(found)
    return findings


def one_line(text: str, limit: int = 300) -> str:
    """Text with control characters and line separators escaped, so each report entry is one line."""
    text = re.sub(r"[\x00-\x1f\x7f\x85\u2028\u2029]", lambda match: ascii(match.group())[1:-1], text)
    return text if len(text) <= limit else text[:limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# agentry


def run_agentry(binary: str, folder: Path) -> list[dict]:
    """agentry's diagnostics for a folder, read as a repository (`--dir`)."""
    process = subprocess.run(
        [binary, "validate", "--dir", str(folder), "-o", "json"],
        capture_output=True, text=True, timeout=300)
    if process.returncode not in (0, 1):
        raise SystemExit(
            f"agentry validate --dir {folder} could not run (exit {process.returncode}):\n{process.stderr}")
    return json.loads(process.stdout)["diagnostics"]


def is_resource_file(relative: str) -> bool:
    """SourceTree.isResourceFile: .yaml/.yml outside skills/ and outside hidden folders."""
    if not (relative.endswith(".yaml") or relative.endswith(".yml")) or relative.startswith("skills/"):
        return False
    return not any(part.startswith(".") for part in relative.split("/"))


def skill_manifests(folder: Path) -> list[Path]:
    skills = folder / "skills"
    if not skills.is_dir():
        return []
    return sorted(
        path / "SKILL.md" for path in skills.iterdir()
        if path.is_dir() and not path.name.startswith(".") and (path / "SKILL.md").is_file())


# ---------------------------------------------------------------------------------------------
# The comparison


@dataclass
class Case:
    label: str  # what the report calls it: the file, and the document's line when a file has several
    expect_valid: bool  # what both sides must say
    known_difference: str | None  # why the sides are allowed to disagree, if they are
    at: str | None  # where an invalid case breaks: each side must report an error there or below
    schema: list[Finding] = field(default_factory=list)
    agentry: list[Finding] = field(default_factory=list)
    problem: str | None = None  # why the case cannot be judged (unreadable YAML, no front matter, ...)


KNOWN_DIFFERENCE = re.compile(r"^\s*#\s*known-difference:\s*(.+?)\s*$", re.MULTILINE)
AT = re.compile(r"^\s*#\s*at:\s*(\S+)\s*$", re.MULTILINE)


def summary(findings: list[Finding]) -> str:
    if not findings:
        return "valid"
    return "invalid (" + "; ".join(finding.text for finding in findings) + ")"


def under(path: str, place: str) -> bool:
    return place == "document" or path == place or path.startswith(place + ".")


def judge(case: Case) -> tuple[bool, str]:
    """Whether the case passes, and the line to print about it."""
    if case.problem:
        return False, f"FAIL {case.label}: {case.problem}"
    schema_valid = not case.schema
    agentry_valid = not case.agentry
    detail = f"jsonschema: {summary(case.schema)}; agentry: {summary(case.agentry)}"
    if case.known_difference:
        if schema_valid == agentry_valid:
            return False, (f"FAIL {case.label}: marked known-difference, but both sides now agree "
                           f"(drop the marker): {detail}")
    elif schema_valid != agentry_valid:
        return False, f"FAIL {case.label}: disagreement: {detail}"
    elif schema_valid != case.expect_valid:
        expected = "valid" if case.expect_valid else "invalid"
        return False, f"FAIL {case.label}: both sides agree, but the case is meant to be {expected}: {detail}"
    if not case.expect_valid and case.at is None:
        return False, f"FAIL {case.label}: an invalid corpus case must say where it breaks in a `# at: PATH` comment"
    if case.at is not None:
        for side, findings in (("jsonschema", case.schema), ("agentry", case.agentry)):
            if findings and not any(under(finding.path, case.at) for finding in findings):
                return False, (f"FAIL {case.label}: meant to break at {case.at}, but {side} reports nothing "
                               f"there: {detail}")
    if case.known_difference:
        return True, f"ok   {case.label}: known difference ({case.known_difference}): {detail}"
    return True, f"ok   {case.label}: {detail}"


def agentry_path(message: str) -> str:
    """The place an agentry message starts with (`spec.skills[0]: ...`), as a dotted path."""
    if message.startswith("front matter"):  # SKILL.md: `front matter.name: ...`, `front matter: ...`
        message = message[len("front matter"):].lstrip(".")
        if message.startswith(":"):
            return "document"
    head, separator, _ = message.partition(": ")
    if not separator or " " in head:
        return "document"
    return re.sub(r"\[(\d+)\]", r".\1", head)


def finding(diagnostic: dict) -> Finding:
    text = f"{diagnostic['line']}:{diagnostic['column']} {diagnostic['code']}: {one_line(diagnostic['message'])}"
    return Finding(agentry_path(diagnostic["message"]), text)


def collect(folder: Path, display: str, binary: str, validators_by_name, expect) -> list[Case]:
    """The cases of one repository folder: every resource document and every skill manifest."""
    by_file: dict[str, list[dict]] = {}
    for diagnostic in run_agentry(binary, folder):
        by_file.setdefault(diagnostic["file"], []).append(diagnostic)
    cases: list[Case] = []

    def new_case(label: str, relative: str, text: str, diagnostics: list[dict]) -> Case:
        known = KNOWN_DIFFERENCE.search(text)
        at = AT.search(text)
        case = Case(label, expect(relative), known.group(1) if known else None, at.group(1) if at else None)
        syntax = [finding(d).text for d in diagnostics if d["category"] == "syntax" and d["severity"] == "error"]
        if syntax:
            case.problem = "agentry cannot read it: " + "; ".join(syntax)
        return case

    resources = sorted(
        path for path in folder.rglob("*")
        if path.is_file() and is_resource_file(path.relative_to(folder).as_posix()))
    for path in resources:
        relative = path.relative_to(folder).as_posix()
        diagnostics = by_file.get(relative, [])
        text = path.read_text(encoding="utf-8")
        base = new_case(f"{display}/{relative}", relative, text, diagnostics)
        documents = []
        if not base.problem:
            try:
                documents = load_documents(text)
            except yaml.YAMLError as error:
                base.problem = f"PyYAML cannot load it under the core schema: {one_line(str(error))}"
            else:
                if not documents:
                    base.problem = "the file holds no YAML document"
        if base.problem:
            cases.append(base)
            continue
        # Each diagnostic belongs to the last document that starts at or before its line.
        starts = [document.line for document in documents]
        per_document: list[list[Finding]] = [[] for _ in documents]
        for diagnostic in diagnostics:
            if diagnostic["category"] == "schema":
                index = max((i for i, start in enumerate(starts) if start <= diagnostic["line"]), default=0)
                per_document[index].append(finding(diagnostic))
        for document, agentry_findings in zip(documents, per_document):
            label = base.label if len(documents) == 1 else f"{base.label} (document at line {document.line})"
            cases.append(Case(
                label, base.expect_valid, base.known_difference, base.at,
                schema=schema_errors(validators_by_name["resource"], document.data),
                agentry=agentry_findings))

    for manifest in skill_manifests(folder):
        relative = manifest.relative_to(folder).as_posix()
        diagnostics = by_file.get(relative, [])
        data = manifest.read_bytes()
        case = new_case(f"{display}/{relative}", relative, data.decode("utf-8", errors="replace"), diagnostics)
        cases.append(case)
        if case.problem:
            continue
        matter = front_matter(data)
        if matter is None:
            case.problem = "no front matter between --- lines; nothing for the schema to check"
            continue
        try:
            documents = load_documents(matter.decode("utf-8"))
        except yaml.YAMLError as error:
            case.problem = f"PyYAML cannot load the front matter under the core schema: {one_line(str(error))}"
            continue
        case.schema = schema_errors(validators_by_name["skill"], documents[0].data if documents else None)
        case.agentry = [finding(d) for d in diagnostics if d["category"] == "schema"]
    return cases


def corpus_expectation(relative: str) -> bool:
    """Corpus cases named `valid-*` (files, or skill folders) are valid; all others invalid."""
    parts = relative.split("/")
    name = parts[1] if parts[0] == "skills" and len(parts) > 1 else Path(parts[-1]).name
    return name.startswith("valid-")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agentry", required=True, help="the agentry binary to run")
    parser.add_argument("--verbose", action="store_true", help="also print the cases that pass")
    arguments = parser.parse_args()
    binary = str(Path(arguments.agentry).resolve())

    validators_by_name = {"resource": load_schema("resource"), "skill": load_schema("skill")}
    passed = failed = 0

    def record(ok: bool, line: str) -> None:
        nonlocal passed, failed
        if ok:
            passed += 1
        else:
            failed += 1
        if not ok or arguments.verbose:
            print(line)

    examples = sorted(path for path in EXAMPLES.iterdir() if path.is_dir())
    record(bool(examples), f"{'ok  ' if examples else 'FAIL'} examples: {len(examples)} example repositories")
    for example in examples:
        display = example.relative_to(ROOT).as_posix()
        for case in collect(example, display, binary, validators_by_name, lambda _: True):
            record(*judge(case))

    corpus_cases = collect(CORPUS, CORPUS.relative_to(ROOT).as_posix(), binary, validators_by_name,
                           corpus_expectation)
    for case in corpus_cases:
        record(*judge(case))
    invalid = sum(1 for case in corpus_cases if not case.expect_valid and not case.known_difference)
    valid = sum(1 for case in corpus_cases if case.expect_valid and not case.known_difference)
    known = sum(1 for case in corpus_cases if case.known_difference)
    enough = invalid >= MIN_INVALID_CASES
    record(enough, f"{'ok  ' if enough else 'FAIL'} corpus: {invalid} invalid cases (at least "
                   f"{MIN_INVALID_CASES} required), {valid} valid cases, {known} known differences")

    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
