"""Pipeline stages: pure logic plus thin Prefect task wrappers, one module per stage."""
