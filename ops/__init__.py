"""Operations tooling: bring the local Prefect + MLflow stack up and down."""
