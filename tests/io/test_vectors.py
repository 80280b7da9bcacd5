"""Vector I/O: round trips, CRS checks, polygon cleaning."""

from __future__ import annotations

import numpy as np
import pytest
import shapely

from landslide_hazard.io.vectors import (
    VectorError,
    check_vector_crs,
    is_vector_path,
    polygonal_parts,
    read_vectors,
    vector_info,
    write_vectors,
)


@pytest.mark.parametrize("suffix", [".gpkg", ".geojson"])
def test_round_trip_keeps_geometries_and_crs(tmp_path, suffix):
    geoms = [shapely.box(0, 0, 10, 10), shapely.MultiPolygon([shapely.box(20, 0, 30, 5)])]
    path = write_vectors(
        tmp_path / f"inv{suffix}", geoms, "EPSG:32645", fields={"id": np.array([1, 2])}
    )
    vec = read_vectors(path)
    assert len(vec) == 2 and vec.crs.to_epsg() == 32645
    assert shapely.area(vec.geometries).tolist() == [100.0, 50.0]
    info = vector_info(path)
    assert info.features == 2 and info.bounds == (0.0, 0.0, 30.0, 10.0)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    assert is_vector_path(path) and not is_vector_path(tmp_path / "x.tif")


def test_crs_mismatch_names_file_and_fix(tmp_path):
    path = write_vectors(tmp_path / "inv.gpkg", [shapely.box(0, 0, 1, 1)], "EPSG:4326")
    with pytest.raises(VectorError, match=r"inv.gpkg: inventory CRS EPSG:4326 differs .*ogr2ogr"):
        check_vector_crs(read_vectors(path), "EPSG:32645", "inventory")
    check_vector_crs(vector_info(path), "EPSG:4326")


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(VectorError, match="nope.gpkg: file not found"):
        read_vectors(tmp_path / "nope.gpkg")
    bad = tmp_path / "bad.geojson"
    bad.write_text("not json at all")
    with pytest.raises(VectorError, match="bad.geojson: cannot be read"):
        vector_info(bad)


def test_polygonal_parts_repairs_and_rejects(tmp_path):
    bow = shapely.Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # self-intersecting
    parts = polygonal_parts(read_vectors(write_vectors(tmp_path / "b.gpkg", [bow], "EPSG:32645")))
    assert len(parts) == 2 and shapely.area(parts).sum() == pytest.approx(50.0)
    mixed = write_vectors(
        tmp_path / "m.gpkg", [bow, shapely.LineString([(0, 0), (1, 1)])], "EPSG:32645"
    )
    with pytest.raises(VectorError, match="non-polygon geometries \\(LineString\\)"):
        polygonal_parts(read_vectors(mixed))


def test_empty_layer(tmp_path):
    path = write_vectors(tmp_path / "e.gpkg", [], "EPSG:32645")
    vec = read_vectors(path)
    assert len(vec) == 0 and len(polygonal_parts(vec)) == 0
    assert vector_info(path).features == 0
