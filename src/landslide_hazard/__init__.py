"""landslide-hazard: space-time landslide hazard modelling (Dahal et al. 2024, NHESS)."""

__version__ = "0.1.0"
