"""What a run reports: `tables` (printed metrics), `comparison` (`xalign compare`), `plots` (curves, t-SNE,
galleries), `report` (the test-split report a run writes)."""
