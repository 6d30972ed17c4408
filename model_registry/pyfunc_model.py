"""The model-from-code entry point MLflow logs with each version (no pickled Python objects)."""

from mlflow.models import set_model

from model_registry.pyfunc import AdapterModel

set_model(AdapterModel())
