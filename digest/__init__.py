"""digest: feeds collected often, ranked per reader, summarized, mailed on schedule."""

__version__ = "0.1.0"
