import sys

from appo.cli import main

sys.exit(main())
