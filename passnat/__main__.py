import sys

from passnat.control.cli import main

sys.exit(main())
