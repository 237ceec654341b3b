"""Plugin manifests: the signed statement of which plugin bytes may load, and under what terms."""
