"""Signing and verifying with SSH (SSHSIG) and minisign keys.

`MANIFEST_NAMESPACE` is the namespace every manifest signature is made in, so that a signature
made with the same key for another purpose (a git commit, a release file) never passes as a
manifest signature.
"""

MANIFEST_NAMESPACE = "mosquitto-guard-manifest"

# The start of the first line of every minisign key and signature file. It is defined here so
# that `keys` can tell a minisign `.pub` file from an SSH one without importing the minisign code.
MINISIGN_UNTRUSTED_PREFIX = "untrusted comment: "
