"""A fix to moto's Step Functions that the waves' approvals need: SendTaskFailure's `cause`.

moto 5.2.5's `StepFunctionResponse.send_task_failure` reads the request's `taskToken` and
`error` and drops its `cause` before calling the backend, whose interpreter (the one that
runs the state machine, `moto.stepfunctions.parser`) takes a `cause` and hands it to the
Catch as AWS does (`{"Error": ..., "Cause": ...}`). Without the fix, `fleetpatch reject`'s
cause (who rejected, and why) never reaches the state machine. The fix passes it on, and
changes nothing else. Installed by moto_server.py.
"""

from __future__ import annotations

import inspect

from moto.core.responses import EmptyResult
from moto.stepfunctions.responses import StepFunctionResponse


def _send_task_failure(self):
    backend = self.stepfunction_backend
    kwargs = {"error": self._get_param("error")}
    # moto's plain backend (state machines not executed) has no cause, and ignores the call.
    if "cause" in inspect.signature(backend.send_task_failure).parameters:
        kwargs["cause"] = self._get_param("cause")
    backend.send_task_failure(self._get_param("taskToken"), **kwargs)
    return EmptyResult()


def install() -> None:
    StepFunctionResponse.send_task_failure = _send_task_failure
