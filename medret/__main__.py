import sys

from medret.cli import main

sys.exit(main())
