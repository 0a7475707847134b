"""Run directories (`results/<name>/`): `directory` (naming, locking, replacing, a training run end to end),
`lock`, `files` (paths a command may not overwrite), `provenance` (what produced a run), and the run object
every evaluator embeds through."""
