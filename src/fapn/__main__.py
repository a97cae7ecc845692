import sys

from fapn.cli.main import main

sys.exit(main())
