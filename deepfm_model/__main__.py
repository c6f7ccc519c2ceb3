"""`python -m deepfm_model ...`: see `deepfm_model.cli`."""

import sys

from deepfm_model.cli import main

sys.exit(main())
