"""Generated from protos/ by `python -m latcomp.service._stubgen`: do not edit."""
