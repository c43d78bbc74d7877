"""Image-set metrics that need no internet: SWD, FID / KID from any feature extractor, memorisation.

Importing this package registers "swd", "fid", "kid" and "nearest_neighbour" in
`counterfeit.metrics.METRICS`.
"""

from counterfeit.evaluation.fid import extract_features, fid_from_features, fid_kid, frechet_distance, kid_from_features
from counterfeit.evaluation.memorization import NearestNeighbours, memorization_check, save_closest_pairs
from counterfeit.evaluation.swd import SWDSettings, laplacian_pyramid, sliced_wasserstein_distance

__all__ = [
    "NearestNeighbours",
    "SWDSettings",
    "extract_features",
    "fid_from_features",
    "fid_kid",
    "frechet_distance",
    "kid_from_features",
    "laplacian_pyramid",
    "memorization_check",
    "save_closest_pairs",
    "sliced_wasserstein_distance",
]
