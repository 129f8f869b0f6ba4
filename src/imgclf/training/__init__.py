"""Training: callbacks and the trainer that turns a config into a run directory."""
