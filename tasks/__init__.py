"""The lifecycle's stages, one package each in lifecycle order (data, evaluation, registry, training,
release, monitoring): pure logic plus thin Prefect task wrappers; `params`, `settings` and
`artifact_store` are the ground floor."""
