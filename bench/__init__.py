"""segmem's measurement engine: sweeps, isolated workers, memory prediction, reports.

It knows architectures only through :class:`architectures.ArchSpec`.
"""

__version__ = "0.1.0"
