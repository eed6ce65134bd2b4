"""The procedural branch of the data stage (``data.*.kind: procedural``): the embedded benchmark.

``render`` draws one street scene (image, labels, depth, stereo/video views) from a seed, with the float
arithmetic of ``exactmath`` so the bytes do not depend on the CPU; ``benchmark`` renders the source and target
splits and writes them in the layouts of :mod:`corda.data.layouts`.
"""
