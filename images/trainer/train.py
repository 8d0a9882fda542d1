"""Train iris classifiers, log each as an MLflow run, register the best, point an alias at it.

Uses only data that ships with scikit-learn (no downloads). Each hyperparameter setting is one
run with its parameters, test metrics, and the model with a signature and an input example. The
model predicts class probabilities (`predict_proba`), so clients can show how sure it is.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import mlflow
import sklearn
from mlflow.models import infer_signature
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

CLASS_NAMES = ("setosa", "versicolor", "virginica")


@dataclass(frozen=True)
class Result:
    run_id: str
    model_uri: str
    regularisation: float
    accuracy: float
    f1_macro: float


def parse_arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI"),
        help="MLflow tracking server ($MLFLOW_TRACKING_URI)",
    )
    parser.add_argument("--experiment", default="iris-classifier")
    parser.add_argument("--model-name", default="iris-classifier")
    parser.add_argument("--alias", default="challenger", help="alias to move to the best version")
    parser.add_argument(
        "--regularisation", default="0.05,0.5,5", help="comma-separated values of C, one run each"
    )
    parser.add_argument("--seed", type=int, default=7, help="for the train/test split")
    arguments = parser.parse_args(argv)
    if not arguments.tracking_uri:
        parser.error("no MLflow server: pass --tracking-uri or set MLFLOW_TRACKING_URI")
    try:
        arguments.regularisation = [float(value) for value in arguments.regularisation.split(",")]
    except ValueError:
        parser.error(f"--regularisation {arguments.regularisation!r} is not a list of numbers")
    if not arguments.regularisation or min(arguments.regularisation) <= 0:
        parser.error("--regularisation values must be positive")
    return arguments


def train(arguments: argparse.Namespace) -> list[Result]:
    features, labels = load_iris(return_X_y=True, as_frame=True)
    train_x, test_x, train_y, test_y = train_test_split(
        features, labels, test_size=0.3, random_state=arguments.seed, stratify=labels
    )
    results = []
    for regularisation in arguments.regularisation:
        with mlflow.start_run(run_name=f"logistic-regression-C{regularisation:g}") as run:
            model = LogisticRegression(C=regularisation, max_iter=1000).fit(train_x, train_y)
            predicted = model.predict(test_x)
            accuracy = float(accuracy_score(test_y, predicted))
            f1_macro = float(f1_score(test_y, predicted, average="macro"))
            mlflow.log_params(
                {
                    "model": "LogisticRegression",
                    "C": regularisation,
                    "seed": arguments.seed,
                    "test_size": 0.3,
                }
            )
            mlflow.log_metrics({"accuracy": accuracy, "f1_macro": f1_macro})
            info = mlflow.sklearn.log_model(
                model,
                name="model",
                signature=infer_signature(test_x, model.predict_proba(test_x)),
                input_example=test_x.head(3),
                pyfunc_predict_fn="predict_proba",
                # Pinned, not inferred: inference imports and inspects the environment (slow).
                pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
                metadata={"class_names": list(CLASS_NAMES)},
            )
            results.append(
                Result(run.info.run_id, info.model_uri, regularisation, accuracy, f1_macro)
            )
            print(
                f"run {run.info.run_id}: C={regularisation:g} accuracy={accuracy:.4f} "
                f"f1_macro={f1_macro:.4f}",
                flush=True,
            )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    mlflow.set_tracking_uri(arguments.tracking_uri)
    mlflow.set_experiment(arguments.experiment)
    results = train(arguments)
    best = max(
        results, key=lambda result: (result.accuracy, result.f1_macro, -result.regularisation)
    )
    version = mlflow.register_model(best.model_uri, arguments.model_name)
    mlflow.MlflowClient().set_registered_model_alias(
        arguments.model_name, arguments.alias, version.version
    )
    print(
        f"registered {arguments.model_name} v{version.version} from run {best.run_id} "
        f"(accuracy {best.accuracy:.4f}); @{arguments.alias} -> v{version.version}",
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
