#!/usr/bin/env python3
"""IAM evaluation for the local stack: the policies of infra/template.yaml and
infra/target-account.yaml, decided by moto's policy evaluator.

fleetsim (the single endpoint every local call passes) attributes each call to a principal
and derives the IAM action(s), resource ARN(s) and condition values the call needs; it asks
this sidecar, once per distinct question, whether the principal's role allows it:

    POST /decide {"principal": P, "checks": [{"action", "resource", "context": {...}}]}
      -> {"principal_arn", "role", "function",
          "results": [{"allowed", "message", "reason", "resource" (as deployed)}]}

Principals (P):
- {"kind": "app", "app": "fleetpatch-plan"}: a function, by the SDK app name it sends in
  its user agent (`app/fleetpatch-<binary>`); mapped to the function whose
  `BuildProperties.Binary` is <binary>, then to its `Role`. `fleetpatch-operator` and
  `fleetpatch-cli` are the operator (the test harness, the demo, the `fleetpatch` command: a
  human with administrator rights in AWS) and are always allowed.
- {"kind": "assumed-role", "account", "role", "session"}: credentials from AssumeRole in a
  target account; the role named ExecutionRoleName is infra/target-account.yaml's role,
  resolved with that account's ID. sts:AssumeRole into it is also checked against the role's
  trust policy (caller ARN and aws:PrincipalOrgID).
- {"kind": "step-functions"}: moto's ASL interpreter; the patching state machine's role.
- anything else: denied (no attributable principal).

The policies are read from the templates themselves (cfn-lint's decoder, intrinsic
functions resolved with the local stack's parameters), so the templates stay the single
source. The evaluator is moto's (`moto.iam.access_control.IAMPolicyStatement`: Action /
NotAction / Resource wildcards, StringEquals conditions), with three corrections made
here, all towards AWS's behaviour: an Allow whose condition is not met does not apply
(moto reports it as an explicit deny), a condition key the request does not carry makes
the condition false (moto skips it), and a condition operator moto does not implement, or
NotResource, is refused when the templates are loaded instead of being silently ignored.

CLI: python tests/localstack/iam.py --fleet tests/fleets/e2e.toml [--port 0]
         [--template infra/template.yaml] [--target-template infra/target-account.yaml]
Prints `iam evaluator listening on 127.0.0.1:PORT` once ready.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import tomllib
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cfnlint.decode import decode
from moto.iam.access_control import IAMPolicyStatement, PermissionResult

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
TARGET_TEMPLATE = ROOT / "infra" / "target-account.yaml"
REGION = "us-east-1"
OPERATOR_APPS = {"fleetpatch-operator", "fleetpatch-cli"}
APP_PREFIX = "fleetpatch-"
# Condition operators moto's evaluator implements (moto.iam.policy_conditions).
SUPPORTED_CONDITION_OPERATORS = {"StringEquals"}
KMS_KEY_ID = "00000000-0000-4000-8000-00000000f1ee"
# The target StackSet's HookDocumentPrefix in the local stack: hook documents of the fleet
# files are named Patch-...; tests/e2e/test_hooks.py names one outside it.
HOOK_DOCUMENT_PREFIX = "Patch-"


class TemplateError(ValueError):
    """A template uses something this resolver or the evaluator cannot handle."""


class _NoValue:
    pass


NO_VALUE = _NoValue()


# -- intrinsic functions ------------------------------------------------------------------
class Resolver:
    """Resolves CloudFormation intrinsics of one template for one account/Region."""

    def __init__(self, template: dict, params: dict, account: str, region: str = REGION):
        self.t = template
        self.region = region
        self.account = account
        self.params = {}
        for name, spec in (template.get("Parameters") or {}).items():
            if name in params:
                self.params[name] = params[name]
            elif "Default" in spec:
                self.params[name] = spec["Default"]
        self.pseudo = {"AWS::AccountId": account, "AWS::Region": region,
                       "AWS::Partition": "aws", "AWS::URLSuffix": "amazonaws.com",
                       "AWS::StackName": "fleetpatch", "AWS::NoValue": NO_VALUE}
        self._conditions: dict[str, bool] = {}

    def resource(self, name: str) -> dict:
        r = (self.t.get("Resources") or {}).get(name)
        if r is None:
            raise TemplateError(f"no resource {name}")
        return r

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self.resolve(self.t["Conditions"][name]))
        return self._conditions[name]

    def ref(self, name: str):
        if name in self.pseudo:
            return self.pseudo[name]
        if name in self.params:
            return self.params[name]
        r = self.resource(name)
        props = r.get("Properties") or {}
        kind = r["Type"]
        if kind == "AWS::DynamoDB::Table":
            return self.resolve(props["TableName"])
        if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            return self.resolve(props["FunctionName"])
        if kind == "AWS::Serverless::StateMachine":
            return self.arn("states", f"stateMachine:{self.resolve(props['Name'])}")
        if kind == "AWS::StepFunctions::StateMachine":
            return self.arn("states", f"stateMachine:{self.resolve(props['StateMachineName'])}")
        if kind == "AWS::IAM::Role":
            return self.resolve(props["RoleName"])
        if kind == "AWS::Logs::LogGroup":
            return self.resolve(props["LogGroupName"])
        if kind == "AWS::KMS::Key":
            return KMS_KEY_ID
        if kind == "AWS::SNS::Topic":
            return self.arn("sns", self.resolve(props["TopicName"]))
        raise TemplateError(f"Ref to {name} ({kind}) is not supported")

    def arn(self, service: str, rest: str, region: str | None = None,
            account: str | None = None) -> str:
        region = self.region if region is None else region
        account = self.account if account is None else account
        return f"arn:aws:{service}:{region}:{account}:{rest}"

    def get_att(self, name: str, attr: str):
        r = self.resource(name)
        kind = r["Type"]
        if attr != "Arn":
            raise TemplateError(f"GetAtt {name}.{attr} is not supported")
        if kind == "AWS::IAM::Role":
            return f"arn:aws:iam::{self.account}:role/{self.ref(name)}"
        if kind in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
            return self.arn("lambda", f"function:{self.ref(name)}")
        if kind == "AWS::DynamoDB::Table":
            return self.arn("dynamodb", f"table/{self.ref(name)}")
        if kind == "AWS::Logs::LogGroup":
            # CloudFormation's LogGroup Arn ends with ":*".
            return self.arn("logs", f"log-group:{self.ref(name)}:*")
        if kind == "AWS::KMS::Key":
            return self.arn("kms", f"key/{KMS_KEY_ID}")
        if kind == "AWS::SQS::Queue":
            return self.arn("sqs", self.resolve(r["Properties"]["QueueName"]))
        if kind == "AWS::Events::Rule":
            return self.arn("events", f"rule/{self.resolve(r['Properties']['Name'])}")
        raise TemplateError(f"GetAtt {name}.Arn ({kind}) is not supported")

    def sub(self, text: str, extra: dict) -> str:
        def one(m):
            key = m.group(1)
            if key.startswith("!"):
                return "${" + key[1:] + "}"
            if key in extra:
                v = extra[key]
            elif "." in key and not key.startswith("AWS::"):
                res, attr = key.split(".", 1)
                v = self.get_att(res, attr)
            else:
                v = self.ref(key)
            if isinstance(v, _NoValue) or isinstance(v, (list, dict)):
                raise TemplateError(f"cannot substitute ${{{key}}} in {text!r}")
            return str(v)
        return re.sub(r"\$\{([^}]+)\}", one, text)

    def resolve(self, node):
        if isinstance(node, dict):
            if len(node) == 1:
                (k, v), = node.items()
                if k == "Ref":
                    return self.ref(v)
                if k == "Fn::GetAtt":
                    res, attr = (v.split(".", 1) if isinstance(v, str) else v)
                    return self.get_att(res, attr)
                if k == "Fn::Sub":
                    if isinstance(v, str):
                        return self.sub(v, {})
                    text, variables = v
                    return self.sub(text, {n: self.resolve(x) for n, x in variables.items()})
                if k == "Fn::Join":
                    sep, items = v
                    return sep.join(str(x) for x in self.resolve(items))
                if k == "Fn::If":
                    cond, yes, no = v
                    return self.resolve(yes if self.condition(cond) else no)
                if k == "Fn::Equals":
                    a, b = (self.resolve(x) for x in v)
                    return str(a) == str(b)
                if k == "Fn::Not":
                    return not self.resolve(v[0])
                if k == "Fn::And":
                    return all(self.resolve(x) for x in v)
                if k == "Fn::Or":
                    return any(self.resolve(x) for x in v)
                if k == "Condition":
                    return self.condition(v)
                if k == "Fn::FindInMap":
                    m, a, b = (self.resolve(x) for x in v)
                    return self.t["Mappings"][m][a][b]
                if k == "Fn::Select":
                    i, items = v
                    return self.resolve(items)[int(self.resolve(i))]
                if k == "Fn::Split":
                    sep, s = v
                    return str(self.resolve(s)).split(sep)
                if k.startswith("Fn::"):
                    raise TemplateError(f"{k} is not supported")
            out = {}
            for k, v in node.items():
                r = self.resolve(v)
                if not isinstance(r, _NoValue):
                    out[str(k)] = r
            return out
        if isinstance(node, list):
            out = []
            for v in node:
                r = self.resolve(v)
                if not isinstance(r, _NoValue):
                    out.append(r)
            return out
        if isinstance(node, bool) or node is None:
            return node
        if isinstance(node, (int, float)):
            return node
        return str(node)


def load_template(path: Path) -> dict:
    template, matches = decode(str(path))
    if template is None:
        raise TemplateError(f"{path}: cannot be read: {matches}")
    return template


# -- evaluation ---------------------------------------------------------------------------
def _check_supported(statement: dict, where: str):
    if "NotResource" in statement:
        raise TemplateError(f"{where}: NotResource is not supported by the evaluator")
    for op in (statement.get("Condition") or {}):
        if op not in SUPPORTED_CONDITION_OPERATORS:
            raise TemplateError(f"{where}: condition operator {op} is not supported by "
                                "moto's evaluator (supported: "
                                f"{', '.join(sorted(SUPPORTED_CONDITION_OPERATORS))})")


def statement_result(statement: dict, action: str, resource: str,
                     context: dict) -> PermissionResult:
    """One statement's answer: PERMITTED, DENIED (explicit) or NEUTRAL (does not apply)."""
    conditions = statement.get("Condition") or {}
    for keys in conditions.values():
        if any(k not in context for k in keys):
            return PermissionResult.NEUTRAL  # a key the request lacks: condition false
    st = IAMPolicyStatement(statement)
    if conditions and not st._check_conditions(context):
        return PermissionResult.NEUTRAL
    return st.is_action_permitted(action, resource, None, context)


def policy_decision(statements: list[dict], action: str, resource: str,
                    context: dict) -> PermissionResult:
    allowed = False
    for s in statements:
        r = statement_result(s, action, resource, context)
        if r == PermissionResult.DENIED:
            return r
        if r == PermissionResult.PERMITTED:
            allowed = True
    return PermissionResult.PERMITTED if allowed else PermissionResult.NEUTRAL


@dataclass
class Role:
    """A role as the templates define it, its identity statements resolved."""
    logical_id: str
    arn: str
    name: str
    statements: list
    trust: list

    def statements_granting(self) -> list[tuple[str, str]]:
        """(Sid, action) of every Allow statement, for the unused-grant report."""
        out = []
        for s in self.statements:
            if s.get("Effect") != "Allow":
                continue
            actions = s.get("Action") or []
            for a in [actions] if isinstance(actions, str) else actions:
                out.append((s.get("Sid", ""), a))
        return out


def _role(resolver: Resolver, logical_id: str) -> Role:
    props = resolver.resource(logical_id)["Properties"]
    statements = []
    for policy in resolver.resolve(props.get("Policies") or []):
        for s in policy["PolicyDocument"]["Statement"]:
            _check_supported(s, f"{logical_id}/{policy.get('PolicyName')}/{s.get('Sid')}")
            statements.append(s)
    trust = resolver.resolve(props["AssumeRolePolicyDocument"])["Statement"]
    return Role(logical_id, resolver.get_att(logical_id, "Arn"), resolver.ref(logical_id),
                statements, trust)


class Policies:
    """Both templates, resolved for the local stack."""

    def __init__(self, fleet: dict, template: Path = TEMPLATE,
                 target_template: Path = TARGET_TEMPLATE, region: str = REGION,
                 hook_document_prefix: str = HOOK_DOCUMENT_PREFIX):
        self.region = region
        self.hook_document_prefix = hook_document_prefix
        self.management = fleet.get("management_account", "111111111111")
        self.org_id = (fleet.get("organization") or {}).get("id", "o-fleetsim01")
        self.execution_role = fleet.get("execution_role",
                                        "AWS-SystemsManager-AutomationExecutionRole")
        self.template = load_template(template)
        self.target_template = load_template(target_template)
        params = {"OrganizationId": self.org_id, "ExecutionRoleName": self.execution_role,
                  "NamePrefix": "fleetpatch", "EventBusName": "default"}
        self.main = Resolver(self.template, params, self.management, region)
        self.functions: dict[str, dict] = {}  # binary -> {function, name, arn, role}
        for logical_id, r in self.template["Resources"].items():
            if r.get("Type") != "AWS::Serverless::Function":
                continue
            binary = ((r.get("Metadata") or {}).get("BuildProperties") or {}).get("Binary")
            role_ref = r["Properties"]["Role"]
            role_id = role_ref["Fn::GetAtt"][0] if isinstance(role_ref["Fn::GetAtt"], list) \
                else role_ref["Fn::GetAtt"].split(".")[0]
            self.functions[binary] = {
                "function": logical_id, "name": self.main.ref(logical_id),
                "arn": self.main.get_att(logical_id, "Arn"), "role": _role(self.main, role_id)}
        sm = self.template["Resources"]["PatchingStateMachine"]["Properties"]["Role"]
        self.state_machine_role = _role(self.main, sm["Fn::GetAtt"][0])
        orchestrator = self.template["Resources"].get("OrchestratorRole")
        self.orchestrator_arn = self.main.get_att("OrchestratorRole", "Arn") \
            if orchestrator else ""
        self._targets: dict[str, Role] = {}
        self._lock = threading.Lock()

    def function_arn(self, binary: str) -> str | None:
        f = self.functions.get(binary)
        return f["arn"] if f else None

    def target_role(self, account: str) -> Role:
        with self._lock:
            if account not in self._targets:
                r = Resolver(self.target_template,
                             {"OrchestratorRoleArn": self.orchestrator_arn,
                              "OrganizationId": self.org_id,
                              "ExecutionRoleName": self.execution_role,
                              "HookDocumentPrefix": self.hook_document_prefix},
                             account, self.region)
                self._targets[account] = _role(r, "ExecutionRole")
            return self._targets[account]

    def all_roles(self) -> dict[str, Role]:
        out = {f["role"].logical_id: f["role"] for f in self.functions.values()}
        out[self.state_machine_role.logical_id] = self.state_machine_role
        out["ExecutionRole"] = self.target_role(self.management)
        return out

    # -- one decision ---------------------------------------------------------------------
    def identify(self, p: dict) -> dict:
        """principal -> {arn, role (Role|None), function, operator, error}."""
        kind = p.get("kind")
        if kind == "app":
            app = p.get("app") or ""
            if app in OPERATOR_APPS:
                return {"operator": True, "arn": f"operator ({app})", "role": None,
                        "function": app}
            binary = app[len(APP_PREFIX):] if app.startswith(APP_PREFIX) else None
            f = self.functions.get(binary)
            if f is None:
                return {"error": f"app name {app!r} is no function of infra/template.yaml",
                        "arn": f"unknown app {app!r}", "role": None, "function": app}
            role = f["role"]
            return {"arn": f"arn:aws:sts::{self.management}:assumed-role/{role.name}/"
                           f"{f['name']}", "role": role, "function": f["function"]}
        if kind == "assumed-role":
            account, name = p.get("account", ""), p.get("role", "")
            arn = f"arn:aws:sts::{account}:assumed-role/{name}/{p.get('session', '')}"
            if name != self.execution_role:
                return {"error": f"role {name} is not defined by infra/target-account.yaml",
                        "arn": arn, "role": None, "function": None}
            return {"arn": arn, "role": self.target_role(account), "function": None}
        if kind == "step-functions":
            role = self.state_machine_role
            return {"arn": f"arn:aws:sts::{self.management}:assumed-role/{role.name}/"
                           "states-execution", "role": role,
                    "function": "PatchingStateMachine"}
        return {"error": "no attributable principal (no app/fleetpatch-<function> in the "
                         "user agent, no assumed-role credentials)",
                "arn": "anonymous", "role": None, "function": None}

    def check(self, who: dict, action: str, resource: str, context: dict) -> dict:
        if who.get("operator"):
            return {"allowed": True, "reason": "operator", "message": ""}
        role = who.get("role")
        denial = (f"User: {who['arn']} is not authorized to perform: {action} "
                  f"on resource: {resource}")
        if role is None:
            return {"allowed": False, "reason": "unattributed",
                    "message": f"{denial} because {who.get('error')}"}
        r = policy_decision(role.statements, action, resource, context)
        if r == PermissionResult.DENIED:
            return {"allowed": False, "reason": "explicit-deny",
                    "message": f"{denial} with an explicit deny in an identity-based policy"}
        if r != PermissionResult.PERMITTED:
            return {"allowed": False, "reason": "no-allow",
                    "message": f"{denial} because no identity-based policy allows the "
                               f"{action} action"}
        if action == "sts:AssumeRole" and resource.endswith(f":role/{self.execution_role}"):
            account = resource.split(":")[4]
            target = self.target_role(account)
            caller = role.arn
            ok = any(statement_result(s, action, "*", context) == PermissionResult.PERMITTED
                     and _principal_matches(s, caller) for s in target.trust)
            if not ok:
                return {"allowed": False, "reason": "trust-policy",
                        "message": f"{denial} because the role's trust policy does not "
                                   f"allow {caller}"}
        return {"allowed": True, "reason": "allowed", "message": ""}

    def local_resource(self, action: str, resource: str) -> str:
        """The local stack runs the functions under their binary names (`plan`); the
        template's `BuildProperties.Binary` names the deployed function they stand for."""
        if action == "lambda:InvokeFunction" and ":function:" in resource:
            name = resource.split(":function:", 1)[1].split(":")[0]
            if name in self.functions:
                return self.functions[name]["arn"]
        return resource

    def decide(self, principal: dict, checks: list[dict]) -> dict:
        who = self.identify(principal)
        role = who.get("role")
        return {"principal_arn": who["arn"], "role": role.logical_id if role else None,
                "function": who.get("function"),
                "results": [self._check_as_deployed(who, c) for c in checks]}

    def _check_as_deployed(self, who: dict, c: dict) -> dict:
        resource = self.local_resource(c["action"], c.get("resource", "*"))
        return {**self.check(who, c["action"], resource, c.get("context") or {}),
                "resource": resource}


def _principal_matches(statement: dict, caller_arn: str) -> bool:
    expected = (statement.get("Principal") or {}).get("AWS")
    if expected is None:
        return False
    expected = [expected] if isinstance(expected, str) else expected
    return "*" in expected or caller_arn in expected


def unused_grants(policies: Policies, decisions: list[dict],
                  allowlist: dict[str, str]) -> list[str]:
    """Granted actions that no allowed decision used, per role, minus the allowlist
    (`action pattern` or `RoleLogicalId/action pattern` -> why it is granted anyway)."""
    used: dict[str, set] = {}
    for d in decisions:
        if d.get("allowed") and d.get("role"):
            used.setdefault(d["role"], set()).add(d["action"])
    out = []
    for logical_id, role in policies.all_roles().items():
        for sid, action in role.statements_granting():
            if any(re.fullmatch(p.split("/", 1)[-1].replace("*", ".*"), action)
                   and ("/" not in p or p.split("/", 1)[0] == logical_id) for p in allowlist):
                continue
            pattern = re.compile("^" + action.replace("*", ".*") + "$")
            if not any(pattern.match(a) for a in used.get(logical_id, ())):
                out.append(f"{logical_id} ({sid}): {action}")
    return out


# -- server -------------------------------------------------------------------------------
def serve(policies: Policies, port: int = 0) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def _answer(self, status: int, body: dict):
            raw = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_GET(self):
            if self.path == "/health":
                return self._answer(200, {"ok": True})
            self._answer(404, {"message": "not found"})

        def do_POST(self):
            if self.path != "/decide":
                return self._answer(404, {"message": "not found"})
            try:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                self._answer(200, policies.decide(body.get("principal") or {},
                                                  body.get("checks") or []))
            except Exception as e:  # noqa: BLE001 - answered, and fleetsim denies the call
                self._answer(500, {"message": f"{type(e).__name__}: {e}"})

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    return server


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--fleet", type=Path, required=True)
    ap.add_argument("--template", type=Path, default=TEMPLATE)
    ap.add_argument("--target-template", type=Path, default=TARGET_TEMPLATE)
    ap.add_argument("--port", type=int, default=0)
    a = ap.parse_args(argv)
    fleet = tomllib.loads(a.fleet.read_text())
    try:
        policies = Policies(fleet, a.template, a.target_template)
    except TemplateError as e:
        print(f"iam evaluator: {e}", file=sys.stderr)
        return 2
    server = serve(policies, a.port)
    print(f"iam evaluator listening on 127.0.0.1:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
