"""`xalign encode`, `xalign split`, `xalign inspect`: argument parsing only, each calling library code.

Each module has `build_parser()` and `main(argv=None) -> int`; nothing else imports them.
"""
