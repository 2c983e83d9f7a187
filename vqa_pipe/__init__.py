"""vqa-pipe: two-stage offline blind video quality assessment.

``vqa_pipe.pipeline`` holds the building blocks (decoding, windows, models, the
feature store, regressors, metrics); ``vqa_pipe.stages`` holds one module per
pipeline stage; ``vqa_pipe.cli`` is the ``vqa-pipe`` command line.
"""

__version__ = "0.1.0"
