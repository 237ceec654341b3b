"""`mosquitto-guard audit`: misconfigurations that let a malicious plugin in, or help one."""
