"""The trust policy (which keys may sign manifests) and the rollback state it guards."""
