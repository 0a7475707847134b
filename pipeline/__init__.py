"""Alignment heads, losses, training, tuning and evaluation on cached embeddings.

`pipeline.open_run(RUN_DIR, checkpoint="best.pt")` is the run object of a trained run (`pipeline.runs.run`).
"""


def __getattr__(name: str):
    if name == "open_run":  # imported on first use: `import pipeline` stays light for the CLI
        from pipeline.runs.restore import open_run

        return open_run
    raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
