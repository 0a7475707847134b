"""Configs: YAML → validated frozen dataclasses. `experiment` (head runs), `backbone` (backbone and two-tower
runs), `schema` (option types and the checks every section shares)."""
