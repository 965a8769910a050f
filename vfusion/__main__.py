import sys

from vfusion.cli import main

sys.exit(main())
