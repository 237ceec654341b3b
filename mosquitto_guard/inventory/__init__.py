"""The code-loading inventory: every file a Mosquitto broker would map into its process."""
