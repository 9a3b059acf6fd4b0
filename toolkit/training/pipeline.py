"""The one leak-free pipeline: impute -> scale -> select -> rebalance -> logistic regression.

Every step is fitted inside the pipeline, so cross-validation fits them on training folds only;
samplers (SMOTE, undersampling) run during `fit` and never touch validation or holdout rows.
"""

from __future__ import annotations

import numpy as np
from imblearn.over_sampling import SMOTE
from imblearn.pipeline import Pipeline as ImbPipeline
from imblearn.under_sampling import RandomUnderSampler
from sklearn.base import BaseEstimator
from sklearn.compose import ColumnTransformer
from sklearn.decomposition import PCA
from sklearn.feature_selection import RFE, SelectFromModel, SelectKBest, chi2, f_classif
from sklearn.impute import KNNImputer, SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import MinMaxScaler, OneHotEncoder, RobustScaler, StandardScaler

from toolkit.training.options import TrainingOptions

__all__ = ["MODEL_STEP", "build_pipeline", "inference_pipeline", "model_param_prefix"]

MODEL_STEP = "model"
RESAMPLE_STEP = "resample"


def build_pipeline(options: TrainingOptions, task: str, numeric: list[str], categorical: list[str]) -> ImbPipeline:
    """An unfitted pipeline for `task` over the given numeric and categorical columns."""
    steps: list[tuple[str, object]] = [("preprocess", _preprocessor(options, numeric, categorical))]
    selector = _selector(options, task)
    if selector is not None:
        steps.append(("select", selector))
    sampler = _sampler(options)
    if sampler is not None:
        steps.append((RESAMPLE_STEP, sampler))
    steps.append((MODEL_STEP, _model(options, task)))
    return ImbPipeline(steps)


def inference_pipeline(fitted: ImbPipeline) -> Pipeline:
    """The fitted pipeline without its samplers, which do nothing at prediction time."""
    return Pipeline([(name, step) for name, step in fitted.steps if name != RESAMPLE_STEP])


def model_param_prefix(options: TrainingOptions, task: str) -> str:
    """Where the LogisticRegression's parameters live inside the pipeline."""
    if task == "multiclass" and options.multiclass == "ovr":
        return f"{MODEL_STEP}__estimator__"
    return f"{MODEL_STEP}__"


def _preprocessor(options: TrainingOptions, numeric: list[str], categorical: list[str]) -> ColumnTransformer:
    transformers: list[tuple[str, BaseEstimator, list[str]]] = []
    if numeric:
        numeric_steps = Pipeline([("impute", _imputer(options)), ("scale", _scaler(options))])
        transformers.append(("numeric", numeric_steps, numeric))
    if categorical:
        encoder = OneHotEncoder(handle_unknown="ignore", sparse_output=False)
        transformers.append(("categorical", encoder, categorical))
    return ColumnTransformer(transformers, verbose_feature_names_out=False)


def _imputer(options: TrainingOptions) -> BaseEstimator:
    if options.imputer == "knn":
        return KNNImputer(n_neighbors=5)
    return SimpleImputer(strategy=options.imputer)


def _scaler(options: TrainingOptions) -> BaseEstimator:
    return {"standard": StandardScaler, "robust": RobustScaler, "minmax": MinMaxScaler}[options.scaler]()


def _selector(options: TrainingOptions, task: str) -> BaseEstimator | None:
    match options.select:
        case "kbest":
            return SelectKBest(chi2 if options.kbest_score == "chi2" else f_classif, k="all")
        case "rfe":
            return RFE(LogisticRegression(max_iter=options.max_iter), n_features_to_select=0.5)
        case "lasso":
            # liblinear converges fastest on L1 but fits binary targets only.
            solver = "liblinear" if task == "binary" else "saga"
            l1 = LogisticRegression(l1_ratio=1.0, solver=solver, C=0.1, max_iter=options.max_iter)
            return SelectFromModel(l1)
        case "pca":
            return PCA(n_components=0.95, random_state=options.seed)
    return None


def _sampler(options: TrainingOptions) -> BaseEstimator | None:
    match options.imbalance:
        case "smote":
            return SMOTE(random_state=options.seed)
        case "undersample":
            return RandomUnderSampler(random_state=options.seed)
    return None


def _model(options: TrainingOptions, task: str) -> BaseEstimator:
    penalty_ratio = {"l1": 1.0, "l2": 0.0, "elasticnet": 0.5, "none": 0.0}[options.penalty]
    logistic = LogisticRegression(
        C=np.inf if options.penalty == "none" else 1.0,
        l1_ratio=penalty_ratio,
        solver=options.solver_for(task),
        class_weight="balanced" if options.imbalance == "class-weight" else None,
        max_iter=options.max_iter,
        random_state=options.seed,
    )
    if task == "multiclass" and options.multiclass == "ovr":
        return OneVsRestClassifier(logistic)
    return logistic
