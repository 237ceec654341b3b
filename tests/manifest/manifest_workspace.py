"""A workspace with real keys, a real policy file and signed manifests for the manifest tests."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from mosquitto_guard.manifest.model import (
    Manifest,
    Permissions,
    PluginFile,
    PluginRequirements,
    render_manifest,
)
from mosquitto_guard.policy.model import Policy, load_policy
from mosquitto_guard.signing import MANIFEST_NAMESPACE
from mosquitto_guard.signing.keys import (
    KeyKind,
    PublicKey,
    generate_keypair,
    load_private_key,
)

NOW = datetime(2030, 1, 1, tzinfo=UTC)
SIGNED_AT = datetime(2029, 6, 1, tzinfo=UTC)
EXPIRES = datetime(2031, 1, 1, tzinfo=UTC)
PLUGIN_BYTES = b"\x7fELF not really a plugin, but these bytes are what gets hashed\n"
PLUGIN_SHA256 = hashlib.sha256(PLUGIN_BYTES).hexdigest()
EXTENSIONS = {"ssh": ".sig", "minisign": ".minisig"}


class Workspace:
    """Keys, a policy, a manifest directory and a state directory under one temporary root."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.keys_dir = root / "keys"
        self.manifest_dir = root / "manifests"
        self.state_dir = root / "state"
        self.plugin = root / "plugins" / "marker.so"
        for directory in (self.keys_dir, self.manifest_dir, self.plugin.parent):
            directory.mkdir()
        self.plugin.write_bytes(PLUGIN_BYTES)
        self.public_keys: dict[str, PublicKey] = {}

    def key(self, name: str, kind: KeyKind = "ssh") -> PublicKey:
        """Create a key pair named `name` under keys/."""
        public_key = generate_keypair(kind, self.keys_dir / name, comment=name)
        self.public_keys[name] = public_key
        return public_key

    def policy(
        self, trusted: Sequence[str], *, threshold: int = 1, revoked: Sequence[str] = ()
    ) -> Policy:
        """Write policy.toml trusting the named keys, and load it."""
        revoked_ids = ", ".join(f'"{self.public_keys[name].key_id}"' for name in revoked)
        lines = [
            "format_version = 1",
            f"threshold = {threshold}",
            'plugin_dirs = ["plugins"]',
            'manifest_dir = "manifests"',
            'state_dir = "state"',
            f"revoked = [{revoked_ids}]",
        ]
        for name in trusted:
            lines += ["", "[[keys]]", f'name = "{name}"', f'file = "keys/{name}.pub"']
        path = self.root / "policy.toml"
        path.write_text("\n".join(lines) + "\n")
        return load_policy(path)

    def manifest(
        self,
        *,
        name: str = "marker",
        version: int = 1,
        sha256: str = PLUGIN_SHA256,
        size: int = len(PLUGIN_BYTES),
        file_name: str = "marker.so",
        expires: datetime = EXPIRES,
        options: tuple[str, ...] = ("config_file",),
        mosquitto: str = ">=2.0,<2.2",
        stem: str | None = None,
    ) -> Path:
        """Write an unsigned manifest and return its path."""
        manifest = Manifest(
            name=name,
            version=version,
            file=PluginFile(name=file_name, sha256=sha256, size=size),
            plugin=PluginRequirements(api_version=5, mosquitto=mosquitto, options=options),
            permissions=Permissions(),
            signed_at=SIGNED_AT,
            expires=expires,
        )
        path = self.manifest_dir / f"{stem or name}.toml"
        path.write_bytes(render_manifest(manifest))
        return path

    def sign(
        self,
        manifest_path: Path,
        key_name: str,
        *,
        label: str | None = None,
        namespace: str = MANIFEST_NAMESPACE,
    ) -> Path:
        """Sign the manifest with the named key; return the signature file's path."""
        private_key = load_private_key(self.keys_dir / key_name)
        extension = EXTENSIONS[private_key.kind]
        middle = f".{label}" if label else ""
        path = manifest_path.with_name(f"{manifest_path.name}{middle}{extension}")
        data = manifest_path.read_bytes()
        path.write_bytes(private_key.sign(data, namespace, file_name=manifest_path.name))
        return path
