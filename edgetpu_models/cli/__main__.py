"""`python -m edgetpu_models.cli`: the same as the `edgetpu-models` console script."""

import sys

from edgetpu_models.cli.app import main

sys.exit(main())
