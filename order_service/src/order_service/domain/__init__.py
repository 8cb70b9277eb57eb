"""The order domain: plain Python, no framework imports."""
