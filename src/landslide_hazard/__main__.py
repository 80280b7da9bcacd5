"""``python -m landslide_hazard ...`` runs the CLI (also ``torchrun -m landslide_hazard train``)."""

from .cli import app

if __name__ == "__main__":
    app(prog_name="landslide-hazard")
