import sys

from zephserver.cli import main

sys.exit(main())
