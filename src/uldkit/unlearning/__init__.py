"""An unlearning run end to end: the catalog of methods, ready data in, a saved run out,
and loading any unlearned model back."""
