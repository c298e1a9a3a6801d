"""Training: the one loop (checkpoints, resume), losses, fine-tuning, and the run directory."""
