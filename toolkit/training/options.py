"""Training options: every choice `mct train` offers, validated together in one place."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from toolkit.errors import ConfigError

__all__ = ["SEARCH_SPACE_HELP", "SOLVERS", "TrainingOptions", "build_options"]

SEARCH_SPACE_HELP = """Default search space (random search samples C log-uniformly in [1e-3, 1e2]
and l1_ratio uniformly in [0.05, 0.95]; other values as listed):

    C             0.001 .. 100 (6 values)   not with --penalty none
    l1_ratio      0.15, 0.5, 0.85           --penalty elasticnet
    k             25/50/75% of inputs, all  --select kbest
    n_features    0.25, 0.5, 0.75           --select rfe (fractions)
    n_components  0.8, 0.9, 0.95            --select pca (variance kept)
    lasso_C       0.01, 0.1, 1              --select lasso (L1 strength)

Override with --param NAME=V1,V2 or a raw pipeline parameter name.
"""

Imputer = Literal["mean", "median", "most_frequent", "knn"]
Scaler = Literal["standard", "robust", "minmax"]
Selector = Literal["none", "kbest", "rfe", "lasso", "pca"]
KBestScore = Literal["anova", "chi2"]
Imbalance = Literal["none", "class-weight", "smote", "undersample"]
Penalty = Literal["l1", "l2", "elasticnet", "none"]
Solver = Literal["auto", "lbfgs", "liblinear", "newton-cg", "newton-cholesky", "sag", "saga"]
Multiclass = Literal["multinomial", "ovr"]
Search = Literal["grid", "random"]

# Which penalties each solver supports (scikit-learn's own compatibility table).
SOLVERS: dict[str, set[str]] = {
    "lbfgs": {"l2", "none"},
    "liblinear": {"l1", "l2"},
    "newton-cg": {"l2", "none"},
    "newton-cholesky": {"l2", "none"},
    "sag": {"l2", "none"},
    "saga": {"l1", "l2", "elasticnet", "none"},
}


class TrainingOptions(BaseModel):
    """Parameters of one training run; no fitted state."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    imputer: Imputer = "median"
    scaler: Scaler = "standard"
    select: Selector = "none"
    kbest_score: KBestScore = "anova"
    imbalance: Imbalance = "none"
    penalty: Penalty = "l2"
    solver: Solver = "auto"
    multiclass: Multiclass = "multinomial"
    search: Search = "grid"
    cv_folds: int = Field(5, ge=2)
    test_size: float = Field(0.25, gt=0.0, lt=1.0)
    seed: int = 42
    n_jobs: int = -1
    random_iterations: int = Field(20, ge=1)
    scoring: str | None = None
    threshold: str = "f1"
    max_iter: int = Field(2000, ge=10)
    space: dict[str, list[Any]] = Field(default_factory=dict)

    @field_validator("threshold")
    @classmethod
    def _known_threshold(cls, value: str) -> str:
        if value in {"f1", "youden"}:
            return value
        try:
            number = float(value)
        except ValueError:
            raise ValueError("use f1, youden or a probability between 0 and 1") from None
        if not 0.0 < number < 1.0:
            raise ValueError("a fixed threshold must lie strictly between 0 and 1")
        return value

    def solver_for(self, task: str) -> str:
        """The solver to use: the explicit one, or the best valid one for penalty and task."""
        if self.solver != "auto":
            return self.solver
        if self.penalty == "elasticnet":
            return "saga"
        if self.penalty == "l1":
            return "saga" if task == "multiclass" and self.multiclass == "multinomial" else "liblinear"
        return "lbfgs"

    def check_for(self, task: str) -> None:
        """Raise `ConfigError` if these options cannot train a model for `task`."""
        solver = self.solver_for(task)
        if self.penalty not in SOLVERS[solver]:
            valid = ", ".join(name for name, penalties in SOLVERS.items() if self.penalty in penalties)
            raise ConfigError(f"solver {solver} does not support penalty {self.penalty}; use one of: {valid}")
        if solver == "liblinear" and task == "multiclass" and self.multiclass == "multinomial":
            raise ConfigError("solver liblinear cannot fit a multinomial model; use --multiclass ovr or another solver")
        if self.select == "kbest" and self.kbest_score == "chi2" and self.scaler != "minmax":
            raise ConfigError("chi-squared scoring needs non-negative features: add --scaler minmax")
        if task == "binary" and self.multiclass == "ovr":
            raise ConfigError("--multiclass ovr applies to multiclass targets; this target is binary")
        if task == "multiclass" and self.threshold != "f1":
            raise ConfigError(
                "--threshold applies to binary targets only; multiclass predictions take the likeliest class"
            )

    @property
    def threshold_value(self) -> float | None:
        """The fixed threshold, or None when it is tuned."""
        return None if self.threshold in {"f1", "youden"} else float(self.threshold)


def build_options(**values: Any) -> TrainingOptions:
    """Construct `TrainingOptions`, reporting the first invalid value as a `ConfigError`."""
    try:
        return TrainingOptions(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"invalid option {where}: {first['msg']}") from None
