#!/usr/bin/env bash
# Lint the fleetpatch infrastructure: cfn-lint and checkov on the two templates, and
# the state machine definition (statemachine/patching.asl.json) on its own.
#
# Usage: bash infra/lint.sh [VENV]      (or VENV=/path bash infra/lint.sh)
# The venv defaults to <repo>/.venv; it is created if missing and the pinned tools of
# infra/requirements.txt are installed into it when absent or at another version.
# Needs only Python 3 (no AWS credentials, no network once the tools are installed).
set -euo pipefail

ROOT="$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"
VENV="${1:-${VENV:-$ROOT/.venv}}"
REQUIREMENTS="$ROOT/infra/requirements.txt"
cd "$ROOT"

if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV"
fi
# Reinstall only when a pinned tool is missing or at another version.
if ! "$VENV/bin/python" - "$REQUIREMENTS" <<'PY'
import sys
from importlib.metadata import version, PackageNotFoundError
for line in open(sys.argv[1]):
    line = line.split("#")[0].strip()
    if not line:
        continue
    name, _, pinned = line.partition("==")
    try:
        if version(name) != pinned:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
then
  "$VENV/bin/pip" install -q -r "$REQUIREMENTS"
fi

TEMPLATES=(infra/template.yaml infra/target-account.yaml)
ASL=statemachine/patching.asl.json
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "== cfn-lint ${TEMPLATES[*]}"
"$VENV/bin/cfn-lint" "${TEMPLATES[@]}"
echo "cfn-lint: no errors"

# cfn-lint checks a state machine definition (rule E3601) only when it is inline in an
# AWS::StepFunctions::StateMachine; it never reads a SAM DefinitionUri file. So the ASL
# is checked on its own: its ${...} placeholders are replaced with dummy ARNs, then
#  1. statelint (PyPI) checks the state graph: transitions, reachability, terminal
#     states, field types. --ignore=FLOAT: Step Functions accepts integer BackoffRate.
#  2. cfn-lint E3601 checks the definition against the Step Functions schema, through
#     a throw-away template that inlines it.
echo "== state machine $ASL"
"$VENV/bin/python" - "$ASL" "$WORK" <<'PY'
import json, re, sys
asl_path, work = sys.argv[1], sys.argv[2]
text = open(asl_path).read()
def dummy(m):
    name = m.group(1)
    if name.endswith("FunctionArn"):
        fn = name[: -len("FunctionArn")].lower()
        return f"arn:aws:lambda:us-east-1:123456789012:function:fleetpatch-{fn}"
    if name == "Partition":
        return "aws"
    sys.exit(f"{asl_path}: unknown placeholder ${{{name}}}")
text = re.sub(r"\$\{([A-Za-z0-9]+)\}", dummy, text)
definition = json.loads(text)
open(f"{work}/patching.asl.json", "w").write(json.dumps(definition, indent=1))
template = {
    "AWSTemplateFormatVersion": "2010-09-09",
    "Resources": {"PatchingStateMachine": {
        "Type": "AWS::StepFunctions::StateMachine",
        "Properties": {"RoleArn": "arn:aws:iam::123456789012:role/fleetpatch-patching",
                       "Definition": definition}}},
}
open(f"{work}/asl-template.json", "w").write(json.dumps(template, indent=1))
PY
"$VENV/bin/statelint" --ignore=FLOAT "$WORK/patching.asl.json"
echo "statelint: no errors"
"$VENV/bin/cfn-lint" "$WORK/asl-template.json"
echo "cfn-lint (E3601 on the inlined ASL): no errors"

echo "== checkov"
for template in "${TEMPLATES[@]}"; do
  "$VENV/bin/checkov" -f "$template" --framework cloudformation --quiet --compact \
    --skip-download --output cli
done
echo "infra lint: OK"
