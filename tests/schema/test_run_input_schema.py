"""The run input's JSON Schema against the shared table of cases.

statemachine/run-input.cases.json is read here and by the plan function's validation test
(shared/src/input/tests.rs). The plan function checks inputs against this same schema file
(with the Rust jsonschema crate): here the table shows that the schema says what the table
says with a second, independent implementation of JSON Schema.

Known gap, left out of the table: Python's jsonschema applies `pattern` with re.search, whose
`$` also matches before a final newline, so it accepts "111122223333\n" where the schema's
own dialect (ECMA-262) and the plan function (Rust's regex: `$` is the end of the text)
refuse it.
"""

import json
import pathlib

import jsonschema
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SCHEMA = json.loads((ROOT / "statemachine/run-input.schema.json").read_text())
CASES = json.loads((ROOT / "statemachine/run-input.cases.json").read_text())["cases"]


def top_level_fields(errors):
    """The top-level fields the schema's errors name (`(input)` for the document itself)."""
    out = set()
    for e in errors:
        if e.absolute_path:
            out.add(str(e.absolute_path[0]))
        elif e.validator == "additionalProperties":
            out.update(k for k in e.instance if k not in SCHEMA["properties"])
        elif e.validator == "required":
            out.update(k for k in e.validator_value if k not in e.instance)
        else:
            out.add("(input)")
    return out


def test_the_schema_is_a_valid_draft_2020_12_schema():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_the_schema_agrees_with_the_validation(case):
    # GIVEN a case of the shared table
    validator = jsonschema.Draft202012Validator(SCHEMA)
    # WHEN the schema checks its input
    errors = list(validator.iter_errors(case["input"]))
    # THEN it accepts exactly the valid inputs, and refuses the others on the same fields
    if case["valid"]:
        assert errors == [], [e.message for e in errors]
    else:
        expected = {f.split("[")[0] for f in case["fields"]}
        assert top_level_fields(errors) == expected, [e.message for e in errors]
