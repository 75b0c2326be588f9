"""``python main.py start|stop|status|command|admin ...`` (same as the console scripts)."""

import sys

from zephserver.cli import main

if __name__ == "__main__":
    sys.exit(main())
