"""One module per `xalign` verb (`main(argv) -> int`): argument parsing and printing only.

Nothing imports these modules but `pipeline.cli`; the work is done by the library they call.
"""
