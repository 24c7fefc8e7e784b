import sys

from eddl.cli import main

sys.exit(main())
