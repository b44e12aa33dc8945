"""Risk layer: valuation of derivatives positions and their scenario margins."""
