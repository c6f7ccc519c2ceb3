"""`python -m deepfm_model.kernels`: build the compiled kernels for this machine (`make install` runs it)."""

import sys

from deepfm_model.kernels import main

sys.exit(main())
