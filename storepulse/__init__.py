"""storepulse: real-time footfall and retail analytics on bytewax, Kafka and Redis.

The top-level folders are the architecture: ``connectors`` (schemas, codecs, Kafka),
``state`` (Redis serving state), ``flows`` (bytewax dataflows), ``simulators`` (a mall
with ground truth) and ``dashboards``. This package holds what spans them: the settings
object, the root exception and the ``storepulse`` command line.
"""

__version__ = "0.1.0"
