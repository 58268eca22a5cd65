"""Training under torchrun: scripts launched with tests/support/torchrun.py and the tests that run them."""
