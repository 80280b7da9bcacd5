"""Random fields for the synthetic scenario.

Two kinds:

- **Procedural** fields (hashed gradient noise, fBm, ridged multifractal): a pure function of the
  map coordinates and a key, so any window of an arbitrarily large grid is evaluated on its own
  and tiles agree exactly where they meet. Used for the fine-grid terrain.
- **Gaussian random fields** on a small grid (cells, shaking, rain pixels), by spectral filtering
  of white noise: zero mean, unit variance, squared-exponential correlation.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xC2B2AE3D27D4EB4F)
_M3 = np.uint64(0xBF58476D1CE4E5B9)
_M4 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31 = np.uint64(30), np.uint64(27), np.uint64(31)

# Sixteen unit gradient directions (every 22.5 degrees): table lookups, no per-pixel
# transcendentals, so a value depends only on its coordinates, never on the array it is in.
_D = np.sqrt(0.5)
_ANGLES = np.arange(16) * (np.pi / 8)
_GX = np.cos(_ANGLES)
_GY = np.sin(_ANGLES)


def hash2(ix: np.ndarray, iy: np.ndarray, key: int) -> np.ndarray:
    """A 64-bit hash of integer lattice coordinates and a key (splitmix64 finaliser)."""
    h = (np.asarray(ix).astype(np.int64).view(np.uint64) * _M1) ^ (
        np.asarray(iy).astype(np.int64).view(np.uint64) * _M2
    )
    h ^= np.uint64(key & 0xFFFFFFFFFFFFFFFF)
    h = (h ^ (h >> _S30)) * _M3
    h = (h ^ (h >> _S27)) * _M4
    return h ^ (h >> _S31)


def _fade(t: np.ndarray) -> np.ndarray:
    return t * t * t * (t * (t * 6.0 - 15.0) + 10.0)


def gradient_noise(u: np.ndarray, v: np.ndarray, key: int) -> np.ndarray:
    """Perlin-style gradient noise at lattice coordinates (u, v); values in about [-1, 1]."""
    i0 = np.floor(u)
    j0 = np.floor(v)
    fu = u - i0
    fv = v - j0
    i0 = i0.astype(np.int64)
    j0 = j0.astype(np.int64)
    out_rows = []
    for dj in (0, 1):
        row = []
        for di in (0, 1):
            g = (hash2(i0 + di, j0 + dj, key) >> np.uint64(60)).astype(np.intp)
            row.append(_GX[g] * (fu - di) + _GY[g] * (fv - dj))
        out_rows.append(row)
    su = _fade(fu)
    sv = _fade(fv)
    bottom = out_rows[0][0] + su * (out_rows[0][1] - out_rows[0][0])
    top = out_rows[1][0] + su * (out_rows[1][1] - out_rows[1][0])
    # The largest magnitude of 2-D gradient noise with unit gradients is sqrt(0.5).
    return (bottom + sv * (top - bottom)) / _D


def _octave_coords(x, y, wavelength_m: float, key: int, octave: int):
    """Lattice coordinates of one octave: rotated by a per-octave angle and offset, so the
    octaves' lattices do not line up (no axis-aligned ridges or creases)."""
    h = int(hash2(np.array([octave]), np.array([key]), 0x5EED)[0])
    angle = (h & 0xFFFF) / 65536.0 * 2 * np.pi
    off_u = ((h >> 16) & 0xFFFF) / 65536.0 * 1000.0
    off_v = ((h >> 32) & 0xFFFF) / 65536.0 * 1000.0
    ca, sa = np.cos(angle), np.sin(angle)
    return (x * ca - y * sa) / wavelength_m + off_u, (x * sa + y * ca) / wavelength_m + off_v


def _octaves(
    x: np.ndarray,
    y: np.ndarray,
    wavelength_m: float,
    octaves: int,
    key: int,
    coord_key: int,
    gain: float,
    lacunarity: float,
) -> Iterator[tuple[float, np.ndarray]]:
    """(amplitude, gradient noise) of each octave: the wavelength shrinks by ``lacunarity`` and
    the amplitude by ``gain`` from one octave to the next."""
    amp = 1.0
    wl = wavelength_m
    for o in range(octaves):
        u, v = _octave_coords(x, y, wl, coord_key, o)
        yield amp, gradient_noise(u, v, key * 1000 + o)
        amp *= gain
        wl /= lacunarity


def fbm(
    x: np.ndarray,
    y: np.ndarray,
    wavelength_m: float,
    octaves: int,
    key: int,
    gain: float = 0.5,
    lacunarity: float = 2.0,
) -> np.ndarray:
    """Fractional Brownian motion: sum of noise octaves, amplitude ``gain**o``, in about [-2, 2]."""
    total = np.zeros(np.broadcast(x, y).shape)
    for amp, noise in _octaves(x, y, wavelength_m, octaves, key, key, gain, lacunarity):
        total += amp * noise
    return total


def ridged(
    x: np.ndarray,
    y: np.ndarray,
    wavelength_m: float,
    octaves: int,
    key: int,
    gain: float = 0.5,
    lacunarity: float = 2.0,
) -> np.ndarray:
    """Ridged multifractal: sum of ``(1 - |noise|)**2`` octaves (sharp ridges, rounded valleys).

    Each octave is weighted by the previous one, so detail concentrates on the ridges (Musgrave
    et al. 1989). Values in [0, 1/(1-gain)).
    """
    total = np.zeros(np.broadcast(x, y).shape)
    weight = np.ones_like(total)
    for amp, noise in _octaves(x, y, wavelength_m, octaves, key, key + 7919, gain, lacunarity):
        signal = 1.0 - np.abs(noise)
        signal = signal * signal * weight
        weight = np.clip(signal * 2.0, 0.0, 1.0)
        total += amp * signal
    return total


def gaussian_field(
    shape: tuple[int, int], corr_px: float, rng: np.random.Generator, n: int | None = None
) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field(s) with correlation ``exp(-r2 / (2 L2))``.

    ``corr_px`` = L in pixels. White noise on a grid padded by 3 L (so the FFT's periodic wrap
    does not correlate opposite edges) is filtered by the square root of the spectral density
    and cropped; the result is rescaled by its theoretical standard deviation. ``n`` draws a
    stack of n independent fields (n, *shape).
    """
    pad = int(np.ceil(3 * corr_px)) + 1
    ny, nx = shape[0] + 2 * pad, shape[1] + 2 * pad
    count = 1 if n is None else n
    ky = np.fft.fftfreq(ny)[:, None]
    kx = np.fft.rfftfreq(nx)[None, :]
    # Fourier transform of a Gaussian kernel with std L/sqrt(2): convolving white noise with
    # it gives the squared-exponential covariance with length L.
    sigma = corr_px / np.sqrt(2.0)
    filt = np.exp(-2.0 * (np.pi * sigma) ** 2 * (kx**2 + ky**2))
    white = rng.standard_normal((count, ny, nx))
    field = np.fft.irfft2(np.fft.rfft2(white) * filt, s=(ny, nx))
    # The variance of the filtered field is sum(filt**2) / (ny*nx) (Parseval, full spectrum).
    full = np.exp(-2.0 * (np.pi * sigma) ** 2 * (np.fft.fftfreq(nx)[None, :] ** 2 + ky**2))
    var = float((full**2).sum() / (ny * nx))
    field = field[:, pad : pad + shape[0], pad : pad + shape[1]] / np.sqrt(var)
    return field[0] if n is None else field
