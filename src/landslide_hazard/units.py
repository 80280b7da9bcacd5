"""Unit tags of input files and their conversion factors: one table per quantity.

GeoTIFF band units (``gdal_edit.py -units``) and NetCDF/CF ``units`` attributes are read where
present. A known tag is converted to the unit the pipeline uses (elevation in metres, daily rain
in mm/day) and the conversion is reported; an unknown tag is refused, since guessing would make
every derived band silently wrong. PGA units come from the config (``pga_unit``) and a file tag
that disagrees is refused (``prepare.inputs``).
"""

from __future__ import annotations

FOOT_M = 0.3048
US_SURVEY_FOOT_M = 1200.0 / 3937.0

#: Elevation unit tag (lower case, spaces collapsed) -> metres per unit; "" = no tag (metres).
ELEVATION_UNITS: dict[str, float] = {
    **dict.fromkeys(("", "m", "metre", "metres", "meter", "meters"), 1.0),
    **dict.fromkeys(("ft", "foot", "feet", "international foot", "intl foot"), FOOT_M),
    **dict.fromkeys(
        ("us-ft", "ftus", "us survey foot", "us_survey_foot", "survey foot"), US_SURVEY_FOOT_M
    ),
    **dict.fromkeys(("dm", "decimetre", "decimeter", "decimetres", "decimeters"), 0.1),
    **dict.fromkeys(("cm", "centimetre", "centimeter", "centimetres", "centimeters"), 0.01),
    **dict.fromkeys(("km", "kilometre", "kilometer", "kilometres", "kilometers"), 1000.0),
}

#: Daily rain unit tag -> mm/day per unit; "" = no tag (mm/day). A stack of daily values in a
#: rate unit (per hour, per second) holds the day's mean rate.
RAIN_UNITS: dict[str, float] = {
    **dict.fromkeys(
        (
            "",
            "mm",
            "mm/day",
            "mm/d",
            "mm day-1",
            "mm d-1",
            "mm day**-1",
            "mm per day",
            "kg m-2",
            "kg m-2 day-1",
            "kg m-2 d-1",
            "kg/m2",
            "kg/m2/day",
            "kg/m^2",
        ),
        1.0,
    ),
    **dict.fromkeys(("0.1 mm", "0.1 mm/day", "0.1mm", "0.1mm/day", "mm/10", "1/10 mm"), 0.1),
    **dict.fromkeys(("cm", "cm/day", "cm/d", "cm day-1", "cm d-1"), 10.0),
    **dict.fromkeys(("m", "m/day", "m/d", "m day-1", "m d-1", "m day**-1", "m of water"), 1000.0),
    **dict.fromkeys(("in", "in/day", "inch/day", "inches/day", "in d-1", "in day-1"), 25.4),
    **dict.fromkeys(("mm/h", "mm/hr", "mm h-1", "mm hr-1", "mm/hour"), 24.0),
    **dict.fromkeys(
        ("kg m-2 s-1", "kg m-2 s**-1", "kg/m2/s", "kg/m^2/s", "mm/s", "mm s-1"), 86400.0
    ),
    **dict.fromkeys(("m/s", "m s-1", "m s**-1"), 86400.0 * 1000.0),
}


def normalise_tag(tag: str | None) -> str:
    """A unit tag as looked up in the tables: stripped, lower case, single spaces."""
    return " ".join((tag or "").strip().lower().split())


def elevation_factor(tag: str | None) -> float | None:
    """Metres per unit of an elevation tag, or None for a tag this table does not know."""
    return ELEVATION_UNITS.get(normalise_tag(tag))


def rain_factor(tag: str | None) -> float | None:
    """mm/day per unit of a daily rain tag, or None for a tag this table does not know."""
    return RAIN_UNITS.get(normalise_tag(tag))
