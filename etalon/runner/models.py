"""MLflow pyfunc wrappers for fitted models (mlflow lives in runner/, so stages get factories)."""

from __future__ import annotations

from typing import Any


def prefill_pyfunc(predictor: dict[str, Any]) -> Any:
    """An ``mlflow.pyfunc.PythonModel`` predicting prefill seconds from prompt token counts.

    Stages may not import mlflow; a pipeline hands this factory to the prefill stage through
    its config (``model_factory: {_target_: etalon.runner.models.prefill_pyfunc, _partial_: true}``)
    and the stage passes the result to ``tracker.log_model``. Input: a DataFrame with a
    ``prompt_tokens`` column, a list, or an array; output: a list of predicted seconds.
    """
    import mlflow.pyfunc

    class PrefillModel(mlflow.pyfunc.PythonModel):  # type: ignore[misc, name-defined]
        def __init__(self, coefficients: dict[str, Any]) -> None:
            self.coefficients = dict(coefficients)

        def predict(self, context: Any, model_input: Any, params: Any = None) -> list[float]:
            from etalon.core.prefill import PrefillPredictor

            if hasattr(model_input, "columns"):
                column = "prompt_tokens" if "prompt_tokens" in model_input.columns else model_input.columns[0]
                model_input = model_input[column].to_numpy()
            return PrefillPredictor.from_dict(self.coefficients).predict_s(model_input).tolist()

    return PrefillModel(predictor)
