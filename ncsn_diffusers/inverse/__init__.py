"""Inverse problems y = A x + n with a score prior: measurement operators, their checks, and the likelihood term that
turns a prior score into the posterior score (`NCSNPosteriorPipeline` runs them)."""

from .likelihood_score import METHODS, conjugate_gradient, dps_correction, posterior_score
from .measurement import LinearMeasurement, check_measurement, check_operator, measurement_in_data_range
from .operators import AveragePoolOperator, GaussianBlurOperator, IdentityOperator, MaskOperator, MatrixOperator

__all__ = [
    "METHODS",
    "AveragePoolOperator",
    "GaussianBlurOperator",
    "IdentityOperator",
    "LinearMeasurement",
    "MaskOperator",
    "MatrixOperator",
    "check_measurement",
    "check_operator",
    "conjugate_gradient",
    "dps_correction",
    "measurement_in_data_range",
    "posterior_score",
]
