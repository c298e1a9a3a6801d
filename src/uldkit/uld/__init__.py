"""ULD itself: the zero-copy assistant, the logit difference, and offset unlearning."""
