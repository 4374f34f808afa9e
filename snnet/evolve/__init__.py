"""Stitching for neuroevolution: recombine two trained networks of different architectures.

matching.py chooses where the parents can be stitched (matched points, no cycles); supernet.py
stitches them both ways there and decodes genotypes (one gene per switch) into offspring, which
are configurations of a stitch space with exact costs.
"""
from snnet.evolve.matching import Matching, linear_cka, match, match_parents
from snnet.evolve.supernet import Genome, Supernet

__all__ = ["Genome", "Matching", "Supernet", "linear_cka", "match", "match_parents"]
