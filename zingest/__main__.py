import sys

from zingest.cli import main

sys.exit(main())
