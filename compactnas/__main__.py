import sys

from compactnas.cli import main

sys.exit(main())
