"""Reading `mosquitto.conf` the way the broker does."""
