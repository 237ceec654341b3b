"""The error hierarchy.

Every error the library raises on purpose derives from `GuardError`, so the command line can print
it as one line and exit with a documented code. Two families are kept apart:

- `VerificationError` and its subclasses: untrusted input (a plugin, a manifest, a signature, a
  config line) failed a check. The command exits with 1.
- `EnvironmentError_` subclasses: the host failed us (a missing file, an absent kernel feature, a
  tool that could not run). The command exits with 3.

Caller mistakes inside the library stay `ValueError`/`TypeError`; the CLI turns bad arguments
into exit code 2 through `UsageError`.
"""

from __future__ import annotations


class GuardError(Exception):
    """Base class of every error mosquitto-guard raises on purpose."""

    exit_code = 3

    def __init__(self, message: str, *, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        if self.fix:
            return f"{self.message}; fix: {self.fix}"
        return self.message


class UsageError(GuardError):
    """The command line was invalid."""

    exit_code = 2


class VerificationError(GuardError):
    """Untrusted input failed a check: the caller must not trust it."""

    exit_code = 1


class ConfigError(VerificationError):
    """A Mosquitto config line that the broker would reject."""

    def __init__(self, path: str, line: int, text: str, reason: str, *, fix: str | None = None):
        location = f"{path}:{line}" if line else path
        shown = text if len(text) <= 120 else text[:117] + "..."
        super().__init__(f"{location}: {reason}: {shown!r}", fix=fix)
        self.path = path
        self.line = line
        self.text = text
        self.reason = reason


class SignatureError(VerificationError):
    """A signature or a key file is malformed, or a signature does not verify."""


class ManifestError(VerificationError):
    """A manifest is malformed, or it does not match the file or the policy."""


class PolicyError(GuardError):
    """The trust policy file is missing, malformed or unsafe."""

    exit_code = 2


class LaunchRejected(VerificationError):
    """`run` found one or more problems and did not start the broker."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__(f"{len(problems)} problem(s) found; the broker was not started")
        self.problems = problems


class HostError(GuardError):
    """The host could not do what was needed: a missing tool, file or kernel feature."""

    exit_code = 3
