"""Solver choice and the penalty/solver/multiclass combinations that cannot work."""

from __future__ import annotations

import pytest

from toolkit.errors import ConfigError
from toolkit.training.options import build_options


@pytest.mark.parametrize(
    ("penalty", "multiclass", "task", "solver"),
    [
        ("l2", "multinomial", "binary", "lbfgs"),
        ("none", "multinomial", "multiclass", "lbfgs"),
        ("l1", "multinomial", "binary", "liblinear"),
        ("l1", "multinomial", "multiclass", "saga"),
        ("l1", "ovr", "multiclass", "liblinear"),
        ("elasticnet", "multinomial", "multiclass", "saga"),
    ],
)
def test_auto_solver_is_valid_for_the_penalty(penalty: str, multiclass: str, task: str, solver: str) -> None:
    options = build_options(penalty=penalty, multiclass=multiclass)
    assert options.solver_for(task) == solver
    options.check_for(task)


@pytest.mark.parametrize(
    ("values", "task", "message"),
    [
        ({"penalty": "l1", "solver": "lbfgs"}, "binary", "solver lbfgs does not support penalty l1"),
        ({"penalty": "elasticnet", "solver": "liblinear"}, "binary", "does not support penalty elasticnet"),
        ({"penalty": "none", "solver": "liblinear"}, "binary", "does not support penalty none"),
        ({"solver": "liblinear"}, "multiclass", "cannot fit a multinomial model"),
        ({"select": "kbest", "kbest_score": "chi2"}, "binary", "needs non-negative features"),
        ({"multiclass": "ovr"}, "binary", "applies to multiclass targets"),
        ({"threshold": "youden"}, "multiclass", "binary targets only"),
    ],
)
def test_invalid_combinations_are_refused(values: dict[str, str], task: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_options(**values).check_for(task)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"penalty": "l3"}, "invalid option penalty"),
        ({"threshold": "1.5"}, "strictly between 0 and 1"),
        ({"threshold": "best"}, "use f1, youden or a probability"),
        ({"cv_folds": 1}, "invalid option cv_folds"),
    ],
)
def test_invalid_values_are_refused(values: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        build_options(**values)
