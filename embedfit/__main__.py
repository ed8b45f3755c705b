"""`embedfit ...` is the `embedfit` command."""
import sys

from embedfit.cli import main

sys.exit(main())
