"""The Fluentd aggregator: fluent.conf, its image, and the generator of its routes (generate.py)."""
