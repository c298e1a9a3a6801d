"""The end-to-end story on the synthetic world: `uldkit demo`."""
