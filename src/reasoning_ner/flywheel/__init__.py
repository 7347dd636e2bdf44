"""The improvement loop: served traffic captured (KServe payload logging) and turned into training data."""
