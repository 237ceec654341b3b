"""`mosquitto-guard run`: verify every piece of code the broker would load, then become it.

The launch is a checklist. Each step either passes or adds a problem; problems are collected
rather than raised one at a time, so that an admin gets every reason in one run.

0. (In the CLI, before this module runs.) The launcher's own environment sets no variable that
   loads code into it, such as LD_PRELOAD or PYTHONPATH; this step is never permissive.
1. The broker binary, the policy file, the manifest directory and the state directory sit on
   root-owned paths that nobody else can write, and `/etc/ld.so.preload` is empty.
2. The broker's arguments: at most one `-c`, no `--tls-keylog`.
3. The environment: no `SNAP_NAME`, no `PUID=0`/`PGID=0`; variables that load code are removed.
4. The config reads cleanly, as the broker of this version reads it, and has no `user root`.
5. The inventory of loaded code, taken with the scrubbed environment. For each item:
   a. admin-chosen code (plugins, `tls_engine` files, OpenSSL modules): a root-owned path with
      no symlink, inside the policy's plugin directories; its bytes copied once into a sealed
      memfd; a signed manifest for exactly those bytes that meets the policy's threshold, is
      not expired, names this broker version and every option the config passes, and is not
      older than a version already accepted;
   b. system code (linked libraries, NSS modules, engines by id): a root-owned path;
   c. anything the inventory could not resolve or read: rejected.
6. A flattened copy of the config, with each plugin path replaced by its sealed memfd, is itself
   sealed and passed with `-c /proc/self/fd/N`.
7. The versions accepted are recorded, so older signed versions are rejected from then on.
8. Unless the sandbox is off, its plan is derived from the config, the inventory and the
   verified manifests (`sandbox.plan`), and applied just before exec (`sandbox.confine`).

Any problem stops the launch before the broker starts, unless the launch is permissive: then
each problem is logged as a warning and the broker starts anyway.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Generic, NoReturn, TypeVar

from mosquitto_guard.config.flatten import flatten
from mosquitto_guard.config.model import BrokerConfig, Location, PluginEntry
from mosquitto_guard.config.reader import read_config
from mosquitto_guard.errors import GuardError, LaunchRejected
from mosquitto_guard.inventory.argv import parse_broker_args
from mosquitto_guard.inventory.collect import collect_inventory, start_probes
from mosquitto_guard.inventory.model import CodeItem, Inventory
from mosquitto_guard.launch.broker import broker_version
from mosquitto_guard.launch.environment import environment_problems, scrub_environment
from mosquitto_guard.launch.paths import check_directory, check_path, is_inside
from mosquitto_guard.launch.seal import SealedFile, seal_bytes, seal_file
from mosquitto_guard.manifest.verify import (
    ManifestIndex,
    VerifiedManifest,
    check_against_manifest,
    find_manifest,
    index_manifests,
)
from mosquitto_guard.policy.model import Policy
from mosquitto_guard.policy.state import VersionState
from mosquitto_guard.sandbox.plan import SEALED_KINDS, LoadedPlugin, SandboxPlan, derive_plan

logger = logging.getLogger(__name__)

_Result = TypeVar("_Result")

LD_SO_PRELOAD = Path("/etc/ld.so.preload")
EXPIRY_NOTICE = timedelta(days=30)


@dataclass
class LaunchPlan:
    """Everything needed to exec the broker, and what was found on the way."""

    broker: Path
    argv: list[str]
    env: dict[str, str]
    problems: list[str] = field(default_factory=list)
    sealed: dict[Path, SealedFile] = field(default_factory=dict)
    accepted: list[tuple[str, int, str]] = field(default_factory=list)
    inherit_fds: list[int] = field(default_factory=list)
    sandbox: SandboxPlan | None = None
    # Things that pass today but need the admin soon, such as a manifest about to expire.
    warnings: list[str] = field(default_factory=list)


@dataclass
class _Context:
    policy: Policy
    version: tuple[int, int, int]
    now: datetime
    plan: LaunchPlan
    rewrites: dict[Location, str] = field(default_factory=dict)
    verified: dict[Path, VerifiedManifest] = field(default_factory=dict)
    # The manifest directory, read when the first plugin is checked and kept for this launch.
    manifests: ManifestIndex | None = None
    loaded: list[LoadedPlugin] = field(default_factory=list)


def prepare_launch(
    policy: Policy,
    broker_args: Sequence[str],
    env: Mapping[str, str],
    *,
    broker: Path,
    now: datetime | None = None,
    sandbox: bool = False,
) -> LaunchPlan:
    """Run the checklist and return the plan; the problems found are in `plan.problems`.

    With `sandbox`, the broker's own libraries join the inventory and `plan.sandbox` contains the
    sandbox derived from the config, the inventory and the verified manifests.

    Raises `GuardError` subclasses only for failures that leave nothing to launch (the broker
    cannot be run, the arguments cannot be parsed).
    """
    plan = LaunchPlan(broker=broker, argv=[], env={})
    # Step 1: the broker binary, the trust anchors and the loader's preload list.
    plan.problems += [f"broker {problem}" for problem in check_path(broker, allow_symlinks=True)]
    plan.problems += _trust_path_problems(policy)
    preload = _preload_problems(LD_SO_PRELOAD)
    if preload:
        # The probes below run the broker and other programs, which would preload it too.
        raise LaunchRejected(plan.problems + preload)
    # Step 2: the broker's arguments.
    args = parse_broker_args(list(broker_args))
    plan.problems += _argument_problems(args)
    # Step 3: the environment.
    plan.problems += environment_problems(env)
    plan.env, removed = scrub_environment(env)
    for name in removed:
        logger.info("removed %s from the broker's environment", name)
    # The three programs the next steps ask (the broker's -h, the loader's --help and openssl
    # version) start together, so they run side by side rather than one after the other.
    version_probe = _Background(broker_version, broker)
    inventory_probes = start_probes(plan.env)
    version = version_probe.result()
    context = _Context(policy, version, now or datetime.now(UTC), plan)
    # Step 4: the config.
    config = _read(args.config_files, version, plan)
    if config is not None:
        plan.problems += _user_problems(config)
    # Step 5: the inventory.
    for thread in inventory_probes:
        thread.join()
    # The checks below use no build id; reading them would import pyelftools for nothing.
    inventory = collect_inventory(
        config, plan.env, cwd=Path.cwd(), broker=broker if sandbox else None, build_ids=False
    )
    plan.problems += [
        f"{undecided}; fix: make the file readable and well-formed"
        for undecided in inventory.undecided
    ]
    for item in inventory.items:
        _check_item(item, config, context)
    # Step 6: the sealed, flattened config.
    plan.argv = _broker_argv(broker, list(broker_args), config, context)
    # Step 8: the sandbox.
    if sandbox:
        plan.sandbox = derive_plan(
            config,
            inventory,
            context.loaded,
            policy.sandbox,
            broker=broker,
            interpreter=_interpreter(inventory),
            cwd=Path.cwd(),
            launcher_uid=os.geteuid(),
            notify_socket=plan.env.get("NOTIFY_SOCKET"),
            protected=[policy.path, policy.manifest_dir, policy.state_dir],
        )
        plan.problems += [f"sandbox: {problem}" for problem in plan.sandbox.problems]
    return plan


def _interpreter(inventory: Inventory) -> Path | None:
    for item in inventory.items:
        if item.resolved_by == "program interpreter" and item.path is not None:
            return item.path
    return None


class _Background(Generic[_Result]):
    """A call run in a thread. `result` waits for it, then returns its value or raises its error."""

    _value: _Result

    def __init__(self, function: Callable[..., _Result], *args: object) -> None:
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(function, args), daemon=True)
        self._thread.start()

    def _run(self, function: Callable[..., _Result], args: tuple[object, ...]) -> None:
        try:
            self._value = function(*args)
        except BaseException as error:  # raised again by result(), in the caller's thread
            self._error = error

    def result(self) -> _Result:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


def _trust_path_problems(policy: Policy) -> list[str]:
    """Return problems on the paths of the policy, the manifest and the state directories.

    A user who can write any of them decides what is trusted.
    """
    problems = [f"policy {problem}" for problem in check_path(policy.path, allow_symlinks=True)]
    for what, directory in (("manifest_dir", policy.manifest_dir), ("state_dir", policy.state_dir)):
        problems += [f"{what} {problem}" for problem in check_directory(directory)]
    return problems


def _preload_problems(path: Path) -> list[str]:
    """Reject any content in /etc/ld.so.preload, comments included.

    glibc's own parser of this file does not honour every line that looks like a comment, so
    no entry is trusted to be inert: the file must be empty or hold only white space.
    """
    try:
        content = path.read_bytes()
    except FileNotFoundError:
        return []
    except OSError as error:
        return [f"{path}: cannot be read ({error.strerror}); fix: check its permissions"]
    if not content.strip():
        return []
    return [
        f"{path}: is not empty; the dynamic loader preloads what it names into every process, "
        "the broker included, before any check; fix: empty the file or remove it"
    ]


def _argument_problems(args: object) -> list[str]:
    problems = []
    config_files = getattr(args, "config_files", [])
    if len(config_files) > 1:
        problems.append(
            f"arguments: {len(config_files)} config files given with -c; the broker merges them "
            "but logs only the last, so a second -c can hide a plugin; fix: pass one -c and "
            "use include_dir for the rest"
        )
    if getattr(args, "tls_keylog", None):
        problems.append(
            "arguments: --tls-keylog writes TLS session secrets to a file; fix: remove it"
        )
    return problems


def _read(
    config_files: Sequence[str], version: tuple[int, int, int], plan: LaunchPlan
) -> BrokerConfig | None:
    if not config_files:
        return None
    try:
        return read_config([Path(name) for name in config_files], version=version[:2])
    except GuardError as error:
        plan.problems.append(str(error))
        return None


def _user_problems(config: BrokerConfig) -> list[str]:
    user = config.last("user")
    if user is not None and user.value.strip() == "root":
        return [
            f"{user.location}: 'user root' keeps the broker and every plugin running as root; "
            "fix: remove the line or name an unprivileged account such as mosquitto"
        ]
    return []


def _check_item(item: CodeItem, config: BrokerConfig | None, context: _Context) -> None:
    plan = context.plan
    if item.kind in ("ld_preload", "ld_library_path", "ld_audit") or not item.loaded:
        return  # removed from the environment in step 3, or never loaded by the broker
    if item.kind == "ld_so_preload":
        return  # the whole file was judged in step 1
    if item.option is not None and "#" in item.written:
        plan.problems.append(
            f"{item.source}: the {item.kind} value {item.written!r} contains '#'; Mosquitto "
            "reads a trailing comment as part of the path; fix: put the comment on its own "
            "line, with # in column 0"
        )
        return
    if item.problem is not None:
        plan.problems.append(f"{item.source}: {item.kind} {item.written}: {item.problem}")
        return
    if item.path is None:
        return  # built into a library already checked, such as OpenSSL's dynamic engine
    if not item.needs_manifest:
        plan.problems += [
            f"{item.kind} {problem}" for problem in check_path(item.path, allow_symlinks=True)
        ]
        return
    _check_admin_code(item, item.path, config, context)


def _location_problems(item: CodeItem, path: Path, policy: Policy) -> list[str]:
    """Return why `path` may not contain admin-chosen code: its owners, modes, or its directory."""
    path_problems = check_path(path, allow_symlinks=False)
    if path_problems:
        return [f"{item.source}: plugin path {problem}" for problem in path_problems]
    if not is_inside(path, list(policy.plugin_dirs)):
        allowed = ", ".join(str(directory) for directory in policy.plugin_dirs) or "none"
        return [
            f"{item.source}: {path} is outside the allowed plugin directories ({allowed}); "
            f"fix: install the plugin into one of them, or add its directory to plugin_dirs in "
            f"{policy.path}"
        ]
    return []


def _check_admin_code(
    item: CodeItem, path: Path, config: BrokerConfig | None, context: _Context
) -> None:
    plan, policy = context.plan, context.policy
    location_problems = _location_problems(item, path, policy)
    if location_problems:
        plan.problems += location_problems
        return

    sealed = plan.sealed.get(path)
    if sealed is None:
        try:
            sealed = seal_file(path)
        except GuardError as error:
            plan.problems.append(f"{item.source}: {error}")
            return
        plan.sealed[path] = sealed
    _rewrite(item, sealed, context)
    # The same file may be loaded by several lines (one per listener), each with its own
    # plugin_opt_ keys: the manifest is looked up once, the options are checked per line.
    try:
        verified = context.verified.get(path)
        if verified is None:
            if context.manifests is None:
                context.manifests = index_manifests(policy.manifest_dir)
            verified = find_manifest(
                path, sealed.sha256, policy, context.now, index=context.manifests
            )
        context.verified[path] = verified
        check_against_manifest(
            verified,
            path,
            sealed.sha256,
            sealed.size,
            context.version,
            _plugin_options(item, config),
            state=VersionState(policy.state_dir),
        )
    except GuardError as error:
        plan.problems.append(f"{item.source}: {error}")
        return
    entry = _plugin_entry(item, config)
    if entry is not None:
        context.loaded.append(LoadedPlugin(entry, verified.manifest))
    accepted = (verified.manifest.name, verified.manifest.version, sealed.sha256)
    left = verified.manifest.expires - context.now
    if left < EXPIRY_NOTICE and accepted not in plan.accepted:
        plan.warnings.append(
            f"{item.source}: manifest {verified.manifest.name} version "
            f"{verified.manifest.version} expires on {verified.manifest.expires:%Y-%m-%d}, in "
            f"{left.days} day(s), and the broker will then not start; fix: sign {path} again"
        )
    problem = _version_conflict(item, accepted, plan.accepted, context)
    if problem:
        plan.problems.append(problem)
        return
    if accepted not in plan.accepted:
        plan.accepted.append(accepted)
        logger.info(
            "verified %s: manifest %s version %d, signed by %s",
            path,
            verified.manifest.name,
            verified.manifest.version,
            ", ".join(verified.signers),
        )


def _version_conflict(
    item: CodeItem,
    accepted: tuple[str, int, str],
    earlier: list[tuple[str, int, str]],
    context: _Context,
) -> str | None:
    """Return why a verified file is still a rollback, or None.

    Two cases escape the per-name rollback state: the same plugin name loaded in two versions
    by one launch, and bytes that an older version of another name also describes (an old
    build signed once more under a second name).
    """
    name, version, digest = accepted
    for other_name, other_version, other_digest in earlier:
        if other_name == name and (other_version, other_digest) != (version, digest):
            return (
                f"{item.source}: plugin {name!r} is loaded in two versions by this config "
                f"({other_version} and {version}); fix: load one build of {name}"
            )
    state = VersionState(context.policy.state_dir)
    index = context.manifests.manifests if context.manifests is not None else ()
    for path, manifest in index:
        if manifest.file.sha256 != digest or manifest.name == name:
            continue
        try:
            state.check(manifest.name, manifest.version, digest)
        except GuardError as error:
            return f"{item.source}: these bytes are also {path}: {error}"
    return None


def _rewrite(item: CodeItem, sealed: SealedFile | None, context: _Context) -> None:
    if sealed is not None and item.option is not None and item.kind in SEALED_KINDS:
        context.rewrites[item.option.location] = sealed.proc_path


def _plugin_entry(item: CodeItem, config: BrokerConfig | None) -> PluginEntry | None:
    if config is None or item.option is None:
        return None
    for entry in config.plugins:
        if entry.option.location == item.option.location:
            return entry
    return None


def _plugin_options(item: CodeItem, config: BrokerConfig | None) -> list[str]:
    entry = _plugin_entry(item, config)
    return sorted(entry.options) if entry is not None else []


def _broker_argv(
    broker: Path, broker_args: list[str], config: BrokerConfig | None, context: _Context
) -> list[str]:
    plan = context.plan
    plan.inherit_fds = [sealed.fd for sealed in plan.sealed.values()]
    if config is None:
        return [str(broker), *broker_args]
    try:
        flat = flatten(config, context.rewrites)
    except GuardError as error:
        plan.problems.append(str(error))
        return [str(broker), *broker_args]
    config_fd = seal_bytes("mosquitto.conf", flat, executable=False)
    plan.inherit_fds.append(config_fd)
    return [str(broker), *_replace_config_argument(broker_args, f"/proc/self/fd/{config_fd}")]


def _replace_config_argument(args: list[str], replacement: str) -> list[str]:
    """Replace the first `-c FILE` with `-c replacement` and drop any further ones.

    The flattened config already contains every `-c` file in order, so one copy is enough.
    """
    result: list[str] = []
    replaced = False
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in ("-c", "--config-file") and index + 1 < len(args):
            if not replaced:
                result += ["-c", replacement]
                replaced = True
            index += 2
            continue
        result.append(arg)
        index += 1
    return result


def finish_plan(plan: LaunchPlan, policy: Policy, *, permissive: bool) -> None:
    """Reject the plan, or warn about it in permissive mode, then record accepted versions.

    Raises `LaunchRejected` listing every problem unless `permissive` is set.
    """
    if plan.problems and not permissive:
        for fd in plan.inherit_fds:
            os.close(fd)
        raise LaunchRejected(plan.problems)
    if permissive:
        logger.warning(
            "permissive mode: problems are logged, not enforced; %d found", len(plan.problems)
        )
    for problem in plan.problems:
        logger.warning("permissive: would reject: %s", problem)
    for warning in plan.warnings:
        logger.warning("%s", warning)
    state = VersionState(policy.state_dir)
    for name, version, digest in plan.accepted:
        state.record(name, version, digest)


def exec_broker(plan: LaunchPlan) -> NoReturn:
    """Replace this process with the broker, handing it the sealed descriptors."""
    for fd in plan.inherit_fds:
        os.set_inheritable(fd, True)
    # The broker replaces this process by design, with the verified argv and environment.
    os.execve(plan.argv[0], plan.argv, plan.env)  # noqa: S606
