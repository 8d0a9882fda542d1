"""`mlopsctl bootstrap`: install an environment into its cluster, then watch it come up.

`plan` decides what to apply and refuses what it must not touch, `cluster` applies it through
the Kubernetes API, `report` says how far each Application got. It sits above the pipelines: it
reads Helm chart sources as validation does and Application states as `status --live` does.
"""
