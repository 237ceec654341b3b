"""Integrity monitoring: a signed baseline of every file that decides what the broker runs.

`watch.watched_files` lists the files, `record.record_file` describes one file, `baseline`
builds, signs and verifies the baseline document, and `compare` reports what changed since.
"""

# The namespace of every baseline signature. It differs from the manifest namespace, so a
# manifest signature never verifies as a baseline signature, and the reverse.
BASELINE_NAMESPACE = "mosquitto-guard-baseline"
