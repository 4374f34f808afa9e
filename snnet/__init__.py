"""snnet: Stitchable Neural Networks.

space (what can be built) -> model (what runs) -> evaluate/train (what it is worth) -> store
(what we know) -> app (what a person sees). Import the parts you need, e.g.
`from snnet.model import StitchableNet`; importing `snnet` itself does nothing.
"""
