import sys

from mosquitto_guard.cli import main

sys.exit(main())
