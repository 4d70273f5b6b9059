"""Executes experiments: config validation, endpoint launch, pipelines, MLflow, Hydra callbacks."""

__all__ = ["run_experiment"]


def run_experiment(dcfg):  # type: ignore[no-untyped-def]
    """Lazy re-export so importing the package stays cheap (mlflow/ray load only when used)."""
    from etalon.runner.experiment import run_experiment as run

    return run(dcfg)
