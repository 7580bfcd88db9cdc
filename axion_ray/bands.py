"""Band names and order, normalisation statistics and unit conversions — the one home for these facts.

Sources: docs/ARCHITECTURE.md §3 and §7; TerraMind S1GRD standardisation stats from terratorch's TerraMind
model card (ibm-esa-geospatial/TerraMind-1.0-*).
"""

from __future__ import annotations

#: Optical bands of every `opt_v*` and `s2_truth` array, in store order; reflectance in [0, 1].
OPTICAL_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08")
#: Sentinel-1 GRD polarisations of the `s1` array, in store order; sigma-0 in dB.
S1_BANDS: tuple[str, ...] = ("VV", "VH")

BLUE, GREEN, RED, NIR = range(4)  # indices into OPTICAL_BANDS

#: TerraMind S2L2A modality: 12 bands in this order, values in DN (reflectance x 10000).
TERRAMIND_S2L2A_BANDS: tuple[str, ...] = (
    "COASTAL_AEROSOL", "BLUE", "GREEN", "RED", "RED_EDGE_1", "RED_EDGE_2", "RED_EDGE_3",
    "NIR_BROAD", "NIR_NARROW", "WATER_VAPOR", "SWIR_1", "SWIR_2",
)
#: Where our four bands sit in TerraMind's S2L2A: B02=BLUE, B03=GREEN, B04=RED, B08=NIR_BROAD.
TERRAMIND_S2L2A_INDEX: tuple[int, ...] = (1, 2, 3, 7)
S2_DN_SCALE = 10000.0

#: Prithvi band names that receive our four bands (B08 reuses the pretrained NIR channel).
PRITHVI_BANDS: tuple[str, ...] = ("BLUE", "GREEN", "RED", "NIR_NARROW")

#: TerraMind S1GRD standardisation (dB), docs/ARCHITECTURE.md §7.
S1GRD_MEAN_DB: tuple[float, float] = (-12.599, -20.293)
S1GRD_STD_DB: tuple[float, float] = (5.195, 5.890)

MONTH_NAMES: tuple[str, ...] = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)
DEFAULT_MONTH = 6  # month 0 ("unknown") is treated as June, as Axion-Sat did
N_BIOMES = 16  # biome_code 0..15, 0 = unknown

#: Prithvi-EO-2.0 standardisation (DN) of BLUE, GREEN, RED, NIR_NARROW — terratorch
#: `prithvi_vit.PRITHVI_V2_MEAN/STD` (first four of the six HLS bands).
PRITHVI_MEAN_DN: tuple[float, ...] = (1087.0, 1342.0, 1433.0, 2734.0)
PRITHVI_STD_DN: tuple[float, ...] = (2248.0, 2179.0, 2178.0, 1850.0)

#: TerraMind v1 S2L2A pretraining mean (DN) of the 12 bands (terratorch `v1_pretraining_mean`);
#: used to fill SWIR / water-vapour bands that Stage 2 does not produce (see models/stage3.py).
S2L2A_PRETRAIN_MEAN_DN: tuple[float, ...] = (
    1390.458, 1503.317, 1718.197, 1853.910, 2199.100, 2779.975,
    2987.011, 3083.234, 3132.220, 3162.988, 2424.884, 1857.648,
)
