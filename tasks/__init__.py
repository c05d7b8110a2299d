"""The lifecycle's stages, one package each, in the order a run goes through them (data, training,
evaluation, registry, release, monitoring): pure logic plus thin Prefect task wrappers. The ground floor
they all stand on: `params`, `settings`, `tracking` (MLflow bookkeeping), `run_owner`, `artifact_store`,
`network` (ports and HTTP probes) and `load_generator`."""
